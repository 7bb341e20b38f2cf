//! One delivery from start to settlement: run the job, publish its event, then ack it
//! (done), dead-letter it (failed) or hand it back (busy elsewhere, or no event could be
//! published). The event is always confirmed by the broker before the message is settled.

use std::sync::Arc;
use std::time::Instant;

use backon::Retryable;
use futures_util::FutureExt;
use tracing::{Instrument, error, info, info_span, warn};

use super::Worker;
use super::failure::{Failure, permanent};
use crate::event::{ErrorCode, ErrorInfo, Event};
use crate::job::Job;
use crate::observe;
use crate::queue::{JobDelivery, Publisher};
use crate::store::ObjectStore;

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    Succeeded,
    /// Waiting for approvals: the request is stored, the message acked.
    Pending,
    Failed(ErrorCode),
    /// Handed back to the broker without an event.
    Requeued,
}

impl Settled {
    fn as_str(self) -> &'static str {
        match self {
            Settled::Succeeded => "succeeded",
            Settled::Pending => "pending",
            Settled::Failed(_) => "failed",
            Settled::Requeued => "requeued",
        }
    }
}

impl<S: ObjectStore + 'static> Worker<S> {
    /// Handles one delivery to the end: publish its event, then settle the message.
    pub(super) async fn handle(self: Arc<Self>, d: JobDelivery, publisher: &Publisher, conn: &lapin::Connection) {
        let started = Instant::now();
        let _gauge = observe::InFlightGauge::enter();
        let attempt = d.attempt();
        let producer = d.producer();
        let job_id = Job::salvage_id(d.body(), d.message_id().as_deref())
            .map(|j| j.to_string())
            .unwrap_or_else(|| "unknown".into());
        let span = info_span!("job", job.id = %job_id, attempt, producer = producer.as_deref().unwrap_or(""), key = tracing::field::Empty,
            artifacts = tracing::field::Empty, outcome = tracing::field::Empty);
        async move {
            info!(redelivered = d.redelivered(), "job started");
            // A panic is a bug, never a reason to lose the job or the worker: it fails the job
            // (retrying would panic again), and the job's guards are dropped on unwind.
            let work = std::panic::AssertUnwindSafe(self.process(d.body(), producer.as_deref(), conn, attempt));
            let result = work.catch_unwind().await.unwrap_or_else(|_| {
                error!("panic while processing the job");
                Err((None, permanent(ErrorCode::Internal, "the worker hit an internal error (a bug)", None)))
            });
            let settled = self.settle(&d, publisher, &job_id, result).await;
            match settled {
                Settled::Succeeded => observe::job_settled(None, started.elapsed()),
                Settled::Pending => observe::job_pending(started.elapsed()),
                Settled::Failed(code) => observe::job_settled(Some(code.as_str()), started.elapsed()),
                Settled::Requeued => observe::job_requeued(),
            }
            tracing::Span::current().record("outcome", settled.as_str());
            info!(outcome = settled.as_str(), duration_ms = started.elapsed().as_millis() as u64, "job finished");
            self.touch();
        }
        .instrument(span)
        .await;
    }

    /// Publishes the event and settles the message as the outcome requires.
    async fn settle(
        &self,
        d: &JobDelivery,
        publisher: &Publisher,
        job_id: &str,
        result: Result<Event, (Option<String>, Failure)>,
    ) -> Settled {
        let (event, settled) = match result {
            Ok(ev) if ev.is_pending() => (ev, Settled::Pending),
            Ok(ev) => (ev, Settled::Succeeded),
            Err((key, Failure::Permanent(info))) => {
                warn!(code = info.code.as_str(), error = %info.message, "job failed");
                let code = info.code;
                (Event::failed(&self.cfg.source, job_id, key, info), Settled::Failed(code))
            }
            Err((_, Failure::Busy(msg))) => {
                // Another delivery of this job is still running: hand it back without an event;
                // when it comes again it is answered from that delivery's manifest.
                info!(reason = %msg, "job busy elsewhere; handing it back");
                if let Err(e) = d.hand_back().await {
                    warn!(error = %e, "reject failed; the broker will redeliver after reconnecting");
                }
                return Settled::Requeued;
            }
            Err((key, Failure::Transient(msg))) => {
                error!(error = %msg, horizon = ?self.cfg.retry_horizon, "giving up after transient failures for the whole retry horizon");
                let info = ErrorInfo {
                    code: ErrorCode::Internal,
                    message: format!(
                        "gave up after retrying for {}: {msg}",
                        humantime::format_duration(self.cfg.retry_horizon)
                    ),
                    artifact: None,
                };
                (Event::failed(&self.cfg.source, job_id, key, info), Settled::Failed(ErrorCode::Internal))
            }
        };
        let publish = || async { publisher.publish_event(&self.cfg.topology, &event).await };
        if let Err(e) = publish
            .retry(self.cfg.retry)
            .notify(|e, dur| {
                observe::retry("publish");
                warn!(error = %e, retry_in = ?dur, "publishing event failed")
            })
            .await
        {
            // Hand the job back: its redelivery is answered from the manifest (or fails again
            // the same way) and publishes the event then. On a dead channel the reject fails,
            // but the broker has requeued the message already.
            error!(error = %e, "could not publish the completion event; handing the job back");
            if let Err(e) = d.hand_back().await {
                warn!(error = %e, "reject failed; the broker redelivers when the channel closes");
            }
            return Settled::Requeued;
        }
        let done = match settled {
            Settled::Succeeded | Settled::Pending => d.ack().await,
            _ => d.dead_letter().await,
        };
        if let Err(e) = done {
            warn!(error = %e, "ack/nack failed after the event was published; a redelivery will re-publish it");
        }
        settled
    }
}
