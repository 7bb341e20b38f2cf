//! Release approvals in the worker. A job whose key needs approvals is fetched and hashed,
//! recorded in the audit log, stored as a pending request (`crate::approval`), announced
//! with a `job.pending` event and acked. Approval messages from `NS.approvals` are then
//! handled one job at a time (under the job's lock):
//! - an approval counts only if its broker-verified `user_id` is an approver of the key, is
//!   not the producer, has not approved this job already, and names exactly the request's
//!   key fingerprint and input digests; anything else is refused (an `approval.refused`
//!   event, an audit record, a dead-letter) and the job stays pending;
//! - once enough approvals are stored, the job is signed as usual, every input fetched
//!   again and checked against its approved digest (`checksum_mismatch` if it changed);
//! - a rejection by an approver, or the expiry timer once `approval_ttl` has passed, ends
//!   it (`approval_rejected`, `approval_expired`).
//!
//! Every step is an audit record written before the state it describes. The state in S3
//! only grows (each object written once), so a worker that dies anywhere leaves a state
//! that the next delivery continues from, and the job lock keeps two workers from signing
//! the same request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use tracing::{Instrument, error, info, info_span, warn};

use super::Worker;
use super::failure::{self, Failure, Stage, permanent};
use super::lock;
use crate::approval::{
    ApprovalMessage, ApprovalRecord, Closed, Decision, PendingRequest, RequestState, Requests, Resolution, rfc3339,
};
use crate::audit::{AuditArtifact, AuditRecord, Outcome};
use crate::event::{ErrorCode, ErrorInfo, Event};
use crate::job::{Job, Sha256Hex};
use crate::observe;
use crate::policy::ApprovalRule;
use crate::queue::{JobDelivery, Publisher};
use crate::store::ObjectStore;

/// What an approved request signs with.
pub(super) struct Approved {
    /// The key the approvers were shown.
    pub fingerprint: String,
    /// Who approved.
    pub approvers: Vec<String>,
}

/// What handling an approval message produced: the events to publish, and whether the
/// message was refused (then dead-lettered) or done with (acked).
pub(super) struct Answer {
    events: Vec<Event>,
    refused: bool,
}

impl Answer {
    fn done(events: Vec<Event>) -> Self {
        Answer { events, refused: false }
    }
}

/// The delay to re-arm an expiry timer with when `remaining` is left: the longest standard
/// step (or policy TTL) that does not overshoot, else the shortest.
fn rearm_delay(remaining: Duration, ttls: &[Duration]) -> Duration {
    let mut steps = vec![Duration::from_secs(60), Duration::from_secs(3600), Duration::from_secs(86400)];
    steps.extend_from_slice(ttls);
    let shortest = steps.iter().copied().min().unwrap_or(Duration::from_secs(60));
    steps.into_iter().filter(|d| *d <= remaining).max().unwrap_or(shortest)
}

impl<S: ObjectStore + 'static> Worker<S> {
    fn requests(&self) -> Result<&Requests, Failure> {
        self.cfg.approvals.as_ref().ok_or_else(|| {
            permanent(
                ErrorCode::Internal,
                "this worker has no approvals location (SIGNET_APPROVALS) but a key needs approvals",
                None,
            )
        })
    }

    async fn request_state(&self, job_id: &str) -> Result<Option<RequestState>, Failure> {
        let requests = self.requests()?;
        self.store_call("approvals", "reading the approval request failed", || requests.state(&self.store, job_id))
            .await
            .map_err(|e| failure::store(Stage::Approvals, e, None))
    }

    async fn close_request(&self, job_id: &str, closed: &Closed) -> Result<(), Failure> {
        let requests = self.requests()?;
        self.store_call("approvals", "closing the approval request failed", || {
            requests.close(&self.store, job_id, closed)
        })
        .await
        .map(drop)
        .map_err(|e| failure::store(Stage::Approvals, e, None))
    }

    fn closed(&self, resolution: Resolution) -> Closed {
        Closed {
            resolution,
            time: rfc3339(SystemTime::now()),
            by: None,
            code: None,
            message: None,
            approvals: Vec::new(),
            worker: self.cfg.source.clone(),
        }
    }

    /// An audit record about request `req`.
    fn approval_record(&self, req: &PendingRequest, outcome: Outcome) -> AuditRecord {
        let mut rec =
            AuditRecord::new(&self.cfg.source, outcome, req.job_id.as_str(), Some(&req.producer), req.key.as_str());
        rec.key_fingerprint = Some(req.key_fingerprint.clone());
        rec.artifacts = req
            .artifacts
            .iter()
            .map(|a| AuditArtifact { source: a.uri(), sha256: Some(a.sha256.to_string()) })
            .collect();
        rec
    }

    /// Sends the expiry timer of `job_id`, to arrive after `delay`.
    async fn arm_expiry(&self, job_id: &crate::job::JobId, delay: Duration) -> Result<(), Failure> {
        let publisher = self.publisher.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (Some(publisher), Some(conn)) = (publisher, conn) else {
            return Err(Failure::Transient("no broker connection to arm the expiry".into()));
        };
        let broker = |e: crate::queue::QueueError| Failure::Transient(format!("arming the expiry timer: {e}"));
        // Declared on a channel of its own: a refused declaration closes that channel, not
        // the one every event is published on.
        let ch = conn.create_channel().await.map_err(|e| broker(e.into()))?;
        let queue = self.cfg.topology.declare_approval_timer(&ch, delay).await.map_err(broker);
        let _ = ch.close(200, "timer declared".into()).await;
        publisher.arm_expiry(&queue?, job_id).await.map_err(broker)
    }

    /// A job (message) whose key needs approvals: answered from its request if it has one,
    /// else fetched, hashed and stored as a new request.
    pub(super) async fn request_approval(
        &self,
        job: &Job,
        producer: &str,
        rule: &ApprovalRule,
    ) -> Result<Event, Failure> {
        if let Some(state) = self.request_state(job.job_id.as_str()).await? {
            let req = &state.request;
            if !req.same_job(job, producer) {
                return Err(permanent(
                    ErrorCode::JobConflict,
                    format!(
                        "job {} already has an approval request with different inputs, output, key or producer",
                        job.job_id
                    ),
                    None,
                ));
            }
            if let Some(closed) = &state.closed {
                return Err(Failure::Permanent(self.ended(&state, closed)));
            }
            if req.remaining(SystemTime::now()).is_zero() {
                return Err(Failure::Permanent(self.expire(&state).await?));
            }
            // A redelivery, or the same job submitted again. The first delivery may have
            // died before it armed the timer: arm one more (a spare one does nothing).
            self.arm_expiry(
                &req.job_id,
                rearm_delay(req.remaining(SystemTime::now()), &self.authorizer.approval_ttls()),
            )
            .await?;
            info!("already waiting for approvals; re-publishing the pending event");
            return Ok(Event::pending(&self.cfg.source, req.clone(), state.counted(rule)));
        }

        let work = self.work_dir()?;
        let (artifacts, _) = self.fetch_artifacts(job, Some(producer), &work.path().join("in")).await?;
        drop(work);
        let fingerprint = self.active_fingerprint(job).await?;
        let mut digests = Vec::with_capacity(artifacts.len());
        for a in &artifacts {
            let (sha, size) = a.digest.clone().unwrap_or_default();
            let sha: Sha256Hex = sha.parse().map_err(|e: String| permanent(ErrorCode::Internal, e, None))?;
            digests.push((sha, size));
        }
        let req = PendingRequest::new(job, producer, fingerprint, digests, rule, &self.cfg.source, SystemTime::now());
        // On record before any approver can see it.
        self.append_audit(self.approval_record(&req, Outcome::ApprovalRequested)).await?;
        // The timer first: a timer for a request that was never stored does nothing, but a
        // request without a timer would never expire.
        self.arm_expiry(&req.job_id, rule.ttl).await?;
        let requests = self.requests()?;
        let created = self
            .store_call("approvals", "storing the approval request failed", || requests.create(&self.store, &req))
            .await
            .map_err(|e| failure::store(Stage::Approvals, e, None))?;
        if !created {
            // Only an earlier delivery of this job can have written it (we hold the job's
            // lock), and one that landed after our read: read it again.
            return Err(Failure::Transient("the approval request appeared while it was being stored".into()));
        }
        info!(expires = %req.expires_at, approvals = rule.approvals, "waiting for approvals");
        Ok(Event::pending(&self.cfg.source, req, Vec::new()))
    }

    /// How an ended request answers again, as the job's failure (signed ones are answered
    /// from their manifest before this is reached).
    fn ended(&self, state: &RequestState, closed: &Closed) -> ErrorInfo {
        ErrorInfo {
            code: closed.code.unwrap_or(ErrorCode::Internal),
            message: closed.message.clone().unwrap_or_else(|| {
                format!(
                    "the approval request of job {} ended ({}) but its outputs are gone",
                    state.request.job_id,
                    closed.resolution.as_str()
                )
            }),
            artifact: None,
        }
    }

    /// Expires a request whose time has passed: audit record, then the closed state.
    async fn expire(&self, state: &RequestState) -> Result<ErrorInfo, Failure> {
        let req = &state.request;
        let info = ErrorInfo {
            code: ErrorCode::ApprovalExpired,
            message: format!(
                "not approved in time: {} of {} approvals by {}",
                state.approvals.len(),
                req.approvals_required,
                req.expires_at
            ),
            artifact: None,
        };
        let mut rec = self.approval_record(req, Outcome::Expired);
        rec.reason = Some(info.message.clone());
        self.append_audit(rec).await?;
        let mut closed = self.closed(Resolution::Expired);
        closed.code = Some(info.code);
        closed.message = Some(info.message.clone());
        self.close_request(req.job_id.as_str(), &closed).await?;
        observe::approval("expire", "expired");
        info!("approval request expired");
        Ok(info)
    }

    /// Handles one approval message to the end: publish its events, then ack it, or
    /// dead-letter it if it was refused.
    pub(super) async fn handle_approval(
        self: Arc<Self>,
        d: JobDelivery,
        publisher: &Publisher,
        conn: &lapin::Connection,
    ) {
        let started = Instant::now();
        let _gauge = observe::InFlightGauge::enter();
        let user = d.producer();
        let job_id = Job::salvage_id(d.body(), None).map(|j| j.to_string()).unwrap_or_else(|| "unknown".into());
        let span = info_span!("approval", job.id = %job_id, approver = user.as_deref().unwrap_or(""));
        async move {
            let redelivered = d.redelivered();
            let work =
                std::panic::AssertUnwindSafe(self.process_approval(d.body(), user.as_deref(), redelivered, conn));
            let result = work.catch_unwind().await.unwrap_or_else(|_| {
                error!("panic while handling an approval message");
                Err(permanent(ErrorCode::Internal, "the worker hit an internal error (a bug)", None))
            });
            let answer = match result {
                Ok(a) => a,
                Err(Failure::Permanent(info)) => {
                    warn!(code = info.code.as_str(), error = %info.message, "approval message failed");
                    let ev = Event::approval_refused(&self.cfg.source, &job_id, None, user.clone(), info);
                    Answer { events: vec![ev], refused: true }
                }
                Err(Failure::Busy(why)) | Err(Failure::Transient(why)) => {
                    warn!(reason = %why, "cannot handle the approval message now; handing it back");
                    if let Err(e) = d.hand_back().await {
                        warn!(error = %e, "reject failed; the broker redelivers when the channel closes");
                    }
                    return;
                }
            };
            for ev in &answer.events {
                let publish = || async { publisher.publish_event(&self.cfg.topology, ev).await };
                if let Err(e) = self.store_free_retry(publish).await {
                    error!(error = %e, "could not publish the answer to an approval; handing it back");
                    let _ = d.hand_back().await;
                    return;
                }
            }
            let settled = if answer.refused { d.dead_letter().await } else { d.ack().await };
            if let Err(e) = settled {
                warn!(error = %e, "ack/nack failed after the answer was published; a redelivery answers again");
            }
            info!(
                refused = answer.refused,
                duration_ms = started.elapsed().as_millis() as u64,
                "approval message handled"
            );
            self.touch();
        }
        .instrument(span)
        .await;
    }

    async fn store_free_retry<F, Fut>(&self, op: F) -> Result<(), crate::queue::QueueError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::queue::QueueError>>,
    {
        use backon::Retryable;
        op.retry(self.cfg.retry)
            .notify(|e, dur| {
                observe::retry("publish");
                warn!(error = %e, retry_in = ?dur, "publishing event failed")
            })
            .await
    }

    async fn process_approval(
        &self,
        body: &[u8],
        user: Option<&str>,
        redelivered: bool,
        conn: &lapin::Connection,
    ) -> Result<Answer, Failure> {
        let msg = match ApprovalMessage::parse(body) {
            Ok(m) => m,
            Err(e) => {
                observe::approval("unknown", "refused");
                let job_id = Job::salvage_id(body, None).map(|j| j.to_string()).unwrap_or_else(|| "unknown".into());
                let info = ErrorInfo {
                    code: ErrorCode::InvalidApproval,
                    message: format!("invalid approval message: {e}"),
                    artifact: None,
                };
                warn!(error = %info.message, "approval message refused");
                let ev = Event::approval_refused(&self.cfg.source, &job_id, None, user.map(str::to_owned), info);
                return Ok(Answer { events: vec![ev], refused: true });
            }
        };
        let held =
            lock::hold(&self.in_flight, conn, &self.cfg.topology, msg.job_id.as_str(), super::pipeline::BUSY_WAIT)
                .await?;
        // A retry within this delivery finds its own approval stored: it is a redelivery.
        let again = AtomicBool::new(redelivered);
        let r = self.within_horizon(|| self.decide(&msg, user, again.swap(true, Ordering::Relaxed))).await;
        held.release().await;
        r
    }

    /// Refuses an approval message: audit record (if it names a request), then the answer.
    async fn refuse(
        &self,
        state: Option<&RequestState>,
        msg: &ApprovalMessage,
        user: Option<&str>,
        code: ErrorCode,
        why: String,
    ) -> Result<Answer, Failure> {
        warn!(reason = %why, "approval message refused");
        let decision = match msg.decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Expire => "expire",
        };
        observe::approval(decision, "refused");
        let key = state.map(|s| s.request.key.to_string());
        if let Some(s) = state {
            let mut rec = self.approval_record(&s.request, Outcome::ApprovalRefused);
            rec.approver = user.map(str::to_owned);
            rec.reason = Some(why.clone());
            self.append_audit(rec).await?;
        }
        let info = ErrorInfo { code, message: why, artifact: None };
        let ev = Event::approval_refused(&self.cfg.source, msg.job_id.as_str(), key, user.map(str::to_owned), info);
        Ok(Answer { events: vec![ev], refused: true })
    }

    /// Who may decide on `state`: the message's user, if it is an approver and not the
    /// producer.
    fn approver<'u>(
        &self,
        state: &RequestState,
        rule: &ApprovalRule,
        user: Option<&'u str>,
    ) -> Result<&'u str, String> {
        let req = &state.request;
        let user = user
            .filter(|u| !u.is_empty())
            .ok_or_else(|| "the approval message has no user_id: the approver cannot be identified".to_owned())?;
        if user == req.producer {
            return Err(format!(
                "{user} submitted job {}; a producer may not approve or reject its own job",
                req.job_id
            ));
        }
        if !rule.approvers.iter().any(|a| a == user) {
            return Err(format!("{user} is not an approver of key {:?}", req.key.as_str()));
        }
        Ok(user)
    }

    /// Decides one approval message, the job's lock held.
    async fn decide(&self, msg: &ApprovalMessage, user: Option<&str>, redelivered: bool) -> Result<Answer, Failure> {
        let job_id = msg.job_id.as_str();
        let Some(state) = self.request_state(job_id).await? else {
            if msg.decision == Decision::Expire {
                return Ok(Answer::done(Vec::new()));
            }
            return self
                .refuse(None, msg, user, ErrorCode::InvalidApproval, format!("job {job_id} has no approval request"))
                .await;
        };
        let req = &state.request;
        let key = Some(req.key.to_string());
        if state.closed.is_some() && msg.decision == Decision::Expire {
            // The timer of a request that has ended: nothing to say again.
            return Ok(Answer::done(Vec::new()));
        }
        if state.closed.is_none()
            && let Some(ev) = self.existing(&req.job()).await?
        {
            // Signed and committed, but the worker died (or failed) before closing the
            // request: close it now, and the job's end is its manifest, never an expiry.
            let mut closed = self.closed(Resolution::Signed);
            closed.approvals = ev.data.approvals.clone();
            self.close_request(job_id, &closed).await?;
            return Ok(Answer::done(vec![ev]));
        }
        if let Some(closed) = &state.closed {
            // It has ended (this is a redelivery after a crash, or a late approval): say
            // how again. Consumers deduplicate events on the job id.
            let ev = match closed.resolution {
                Resolution::Signed => match self.existing(&req.job()).await? {
                    Some(ev) => ev,
                    None => Event::failed(&self.cfg.source, job_id, key, self.ended(&state, closed)),
                },
                _ => Event::failed(&self.cfg.source, job_id, key, self.ended(&state, closed)),
            };
            return Ok(Answer::done(vec![ev]));
        }
        let rule = self.authorizer.approval(&req.key).cloned().unwrap_or_else(|| req.rule());
        let now = SystemTime::now();
        if req.remaining(now).is_zero() {
            let info = self.expire(&state).await?;
            return Ok(Answer::done(vec![Event::failed(&self.cfg.source, job_id, key, info)]));
        }
        match msg.decision {
            Decision::Expire => {
                // Early: a clock behind the broker's, or a timer sent by hand. Wait more.
                self.arm_expiry(&req.job_id, rearm_delay(req.remaining(now), &self.authorizer.approval_ttls())).await?;
                Ok(Answer::done(Vec::new()))
            }
            Decision::Reject => {
                let user = match self.approver(&state, &rule, user) {
                    Ok(u) => u,
                    Err(why) => return self.refuse(Some(&state), msg, user, ErrorCode::Unauthorized, why).await,
                };
                let reason = msg.reason.clone().unwrap_or_default();
                let info = ErrorInfo {
                    code: ErrorCode::ApprovalRejected,
                    message: format!("rejected by {user}: {reason}"),
                    artifact: None,
                };
                let mut rec = self.approval_record(req, Outcome::Rejected);
                rec.approver = Some(user.to_owned());
                rec.reason = Some(reason);
                self.append_audit(rec).await?;
                let mut closed = self.closed(Resolution::Rejected);
                closed.by = Some(user.to_owned());
                closed.code = Some(info.code);
                closed.message = Some(info.message.clone());
                self.close_request(job_id, &closed).await?;
                observe::approval("reject", "rejected");
                info!(by = user, "approval request rejected");
                Ok(Answer::done(vec![Event::failed(&self.cfg.source, job_id, key, info)]))
            }
            Decision::Approve => self.approve(state, &rule, msg, user, redelivered).await,
        }
    }

    async fn approve(
        &self,
        mut state: RequestState,
        rule: &ApprovalRule,
        msg: &ApprovalMessage,
        user: Option<&str>,
        redelivered: bool,
    ) -> Result<Answer, Failure> {
        let user = match self.approver(&state, rule, user) {
            Ok(u) => u,
            Err(why) => return self.refuse(Some(&state), msg, user, ErrorCode::Unauthorized, why).await,
        };
        let req = state.request.clone();
        if msg.key_fingerprint.as_deref() != Some(req.key_fingerprint.as_str()) {
            let why = format!(
                "the approval names key {}, but job {} is to be signed with key {}",
                msg.key_fingerprint.as_deref().unwrap_or("(none)"),
                req.job_id,
                req.key_fingerprint
            );
            return self.refuse(Some(&state), msg, Some(user), ErrorCode::InvalidApproval, why).await;
        }
        let digests = req.digests();
        if msg.artifacts.as_ref() != Some(&digests) {
            let why = format!(
                "the approval names other inputs or digests than the request of job {} ({} artifacts)",
                req.job_id,
                digests.len()
            );
            return self.refuse(Some(&state), msg, Some(user), ErrorCode::InvalidApproval, why).await;
        }
        let already = state.approvals.iter().any(|a| a.approver == user);
        if already && !redelivered {
            let why =
                format!("{user} has already approved job {}; approvals must come from distinct approvers", req.job_id);
            return self.refuse(Some(&state), msg, Some(user), ErrorCode::InvalidApproval, why).await;
        }
        if !already {
            let mut rec = self.approval_record(&req, Outcome::Approved);
            rec.approver = Some(user.to_owned());
            self.append_audit(rec).await?;
            let approval = ApprovalRecord {
                approver: user.to_owned(),
                time: rfc3339(SystemTime::now()),
                key_fingerprint: req.key_fingerprint.clone(),
                artifacts: digests,
                worker: self.cfg.source.clone(),
            };
            let requests = self.requests()?;
            self.store_call("approvals", "storing the approval failed", || {
                requests.add_approval(&self.store, req.job_id.as_str(), &approval)
            })
            .await
            .map_err(|e| failure::store(Stage::Approvals, e, None))?;
            state.approvals.push(approval);
            observe::approval("approve", "counted");
        }
        let counted = state.counted(rule);
        info!(by = user, approvals = counted.len(), needed = rule.approvals, "approval counted");
        if counted.len() < rule.approvals {
            return Ok(Answer::done(vec![Event::pending(&self.cfg.source, req, counted)]));
        }
        self.sign_approved(&state, counted).await
    }

    /// Signs a request that has its approvals, then closes it.
    async fn sign_approved(&self, state: &RequestState, approvers: Vec<String>) -> Result<Answer, Failure> {
        let req = &state.request;
        let job = req.job();
        let producer = req.producer.as_str();
        let key = Some(req.key.to_string());
        // The policy may have changed while the request waited: the producer must still
        // be allowed to use this key, sources and output.
        let result = match self.authorizer.authorize(&job, Some(producer)) {
            Err(denied) => Err(self.deny(&job, Some(producer), denied).await),
            Ok(()) => {
                let approved = Approved { fingerprint: req.key_fingerprint.clone(), approvers: approvers.clone() };
                self.sign_job(&job, Some(producer), Some(&approved)).await
            }
        };
        match result {
            Ok(ev) => {
                let mut closed = self.closed(Resolution::Signed);
                closed.approvals = approvers;
                // The outputs are committed: the job has succeeded whatever happens to the
                // request's state. A close that fails is done by the next message about it.
                if let Err(e) = self.close_request(req.job_id.as_str(), &closed).await {
                    warn!(error = ?e, "signed, but could not close the approval request; the next message closes it");
                }
                info!("approved request signed");
                Ok(Answer::done(vec![ev]))
            }
            Err(Failure::Permanent(info)) => {
                warn!(code = info.code.as_str(), error = %info.message, "approved request failed");
                let mut closed = self.closed(Resolution::Failed);
                closed.code = Some(info.code);
                closed.message = Some(info.message.clone());
                closed.approvals = approvers;
                self.close_request(req.job_id.as_str(), &closed).await?;
                Ok(Answer::done(vec![Event::failed(&self.cfg.source, req.job_id.as_str(), key, info)]))
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_are_re_armed_without_overshooting() {
        let h = Duration::from_secs(3600);
        assert_eq!(rearm_delay(Duration::from_secs(30), &[]), Duration::from_secs(60));
        assert_eq!(rearm_delay(Duration::from_secs(30), &[Duration::from_secs(3)]), Duration::from_secs(3));
        assert_eq!(rearm_delay(5 * h, &[72 * h]), h);
        assert_eq!(rearm_delay(100 * h, &[72 * h]), 72 * h);
    }
}
