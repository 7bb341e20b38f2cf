//! The worker: consume → validate → fetch → sign → write → publish → ack, and shutdown.
//!
//! Every job ends in exactly one of three ways, decided in [`Worker::settle`]:
//! - done: outputs written (manifest last), succeeded event confirmed, then ack;
//! - permanent failure (bad input): failed event confirmed, then nack without requeue, so
//!   the broker dead-letters the message to `NS.jobs.dead`; nothing was written;
//! - transient failure (store, vault or broker trouble, after retries with backoff): reject
//!   with requeue, until the delivery count reaches the limit, then a failed `internal` event
//!   and a dead-letter.
//!
//! A crash at any point leaves the message unacked, so it is redelivered; a redelivered job
//! whose manifest exists with the same inputs re-publishes its event without signing again.
//!
//! Authorization comes first: the policy checks the broker-verified `user_id` against the
//! job's key, sources, output location (before anything is read) and formats (after
//! detection, before signing). A denial is appended to the audit log, then failed as
//! `unauthorized`. Every signing run is appended to the audit log after the signatures are
//! made and checked and before any output is written, so nothing signed becomes visible
//! without its audit record.

mod failure;
mod lock;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::audit::{AuditArtifact, AuditLog, AuditOutput, AuditRecord, Outcome};
use crate::event::{ErrorCode, ErrorInfo, Event, EventData, ObjectRef, OutputRef};
use crate::job::{Job, OutputSpec};
use crate::key::SigningKey;
use crate::policy::{Authorizer, Denied};
use crate::queue::{self, Publisher, Topology};
use crate::sign::manifest::Manifest;
use crate::sign::{self, Artifact, BatchContext, MANIFEST};
use crate::store::{ObjectStore, StoreError};
use crate::vault::Vault;
use failure::{Failure, Stage, permanent};
use lock::{InFlight, JobLock};

/// Largest manifest the worker reads back.
const MANIFEST_LIMIT: u64 = 16 * 1024 * 1024;

/// How long a duplicate delivery waits for the job's lock before handing the message back
/// (a requeue, counted by the broker). Short enough that waiting plus the job's own retry
/// horizon stays under RabbitMQ's 30 min consumer timeout with the default horizon.
const BUSY_WAIT: Duration = Duration::from_secs(5 * 60);

/// Backoff between whole-job retries: 1 s doubling to 60 s, with up to 25% jitter.
fn retry_delay(retries: u32) -> Duration {
    let base = Duration::from_secs(1u64 << retries.min(6)).min(Duration::from_secs(60));
    let jitter = rand::random::<f64>() * 0.25;
    base.mul_f64(1.0 + jitter)
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub amqp_url: String,
    pub topology: Topology,
    /// Jobs in flight at once (= prefetch).
    pub concurrency: u16,
    /// Deliveries after which a job that never finished (its workers died) is failed and
    /// dead-lettered. Transient failures do not count: they are retried within `retry_horizon`.
    pub max_deliveries: i64,
    /// How long a job that keeps failing transiently (S3, KMS or vault unavailable, disk
    /// full) is retried, backing off, before it is failed as `internal`.
    pub retry_horizon: Duration,
    /// Largest artifact fetched; a larger one fails the job as `invalid_artifact`.
    pub max_artifact_bytes: u64,
    /// How long in-flight jobs may run after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Where artifacts are staged while they are signed.
    pub work_dir: PathBuf,
    /// CloudEvents `source`.
    pub source: String,
    /// Retry policy for store operations within one delivery.
    pub retry: ExponentialBuilder,
    /// How long an unsealed key is reused before it is unsealed again.
    pub key_cache_ttl: Duration,
}

impl WorkerConfig {
    /// The default in-delivery retry policy: about 25 s of exponential backoff with jitter.
    pub fn default_retry() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(300))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(8)
            .with_jitter()
    }
}

/// One broker connection: a consuming channel and a confirm-mode publisher.
struct Session {
    conn: Arc<lapin::Connection>,
    ch: lapin::Channel,
    publisher: Publisher,
    consumer: lapin::Consumer,
    tag: String,
}

impl Session {
    async fn open(cfg: &WorkerConfig) -> Result<Session, queue::QueueError> {
        // No automatic recovery: a connection that fails is replaced whole (see `run`), so no
        // recovered consumer can hold deliveries that nobody reads.
        let conn = Arc::new(queue::connect_once(&cfg.amqp_url, &cfg.source).await?);
        let ch = conn.create_channel().await?;
        cfg.topology.declare(&ch).await?;
        ch.basic_qos(cfg.concurrency, BasicQosOptions::default()).await?;
        let publisher = Publisher::open(&conn).await?;
        let tag = format!("{}-{}", cfg.source, uuid::Uuid::new_v4());
        let consumer = ch
            .basic_consume(
                cfg.topology.jobs.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session { conn, ch, publisher, consumer, tag })
    }

    async fn close(self) {
        let _ = self.conn.close(200, "worker session closed".into()).await;
    }
}

/// Unsealed keys by (name, fingerprint), with when they were unsealed.
type KeyCache = HashMap<(String, String), (Arc<SigningKey>, Instant)>;

/// A worker's shared state.
pub struct Worker<S> {
    cfg: WorkerConfig,
    store: S,
    vault: Arc<Vault>,
    authorizer: Authorizer,
    audit: AuditLog,
    keys: tokio::sync::Mutex<KeyCache>,
    /// Job ids in flight in this process (the broker lock only excludes other connections).
    in_flight: InFlight,
}

impl<S: ObjectStore + 'static> Worker<S> {
    pub fn new(cfg: WorkerConfig, store: S, vault: Vault, authorizer: Authorizer, audit: AuditLog) -> Arc<Self> {
        Arc::new(Worker {
            cfg,
            store,
            vault: Arc::new(vault),
            authorizer,
            audit,
            keys: tokio::sync::Mutex::new(HashMap::new()),
            in_flight: Default::default(),
        })
    }

    /// Runs until `shutdown` is cancelled, then drains in-flight jobs within the deadline.
    ///
    /// A lost broker connection (a restart, a network cut) is replaced by a new one: topology
    /// declared again, consumer registered again. Jobs still running on the old connection
    /// finish, but cannot be acked there; the broker requeued their messages when the old
    /// connection died, and the redeliveries are answered from the committed manifests.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.cfg.work_dir)?;
        let tracker = TaskTracker::new();
        let mut reconnects = 0u32;
        let mut last: Option<Session> = None;
        'sessions: loop {
            let mut session = match Session::open(&self.cfg).await {
                Ok(s) => s,
                Err(e) => {
                    let delay = retry_delay(reconnects.min(4));
                    reconnects += 1;
                    warn!(error = %e, retry_in = ?delay, "cannot reach the broker; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'sessions,
                        _ = tokio::time::sleep(delay) => continue 'sessions,
                    }
                }
            };
            if let Some(old) = last.take() {
                tokio::spawn(old.close());
            }
            let opened = Instant::now();
            info!(queue = %self.cfg.topology.jobs, concurrency = self.cfg.concurrency, "worker consuming");
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        last = Some(session);
                        break 'sessions;
                    }
                    next = session.consumer.next() => match next {
                        Some(Ok(delivery)) => {
                            let me = self.clone();
                            let publisher = session.publisher.clone();
                            let conn = session.conn.clone();
                            tracker.spawn(async move { me.handle(delivery, &publisher, &conn).await });
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "broker connection lost; reconnecting");
                            break;
                        }
                        None => {
                            warn!("consumer cancelled by the broker; reconnecting");
                            break;
                        }
                    }
                }
            }
            last = Some(session);
            // A session that ends at once (a broker that accepts and then drops us) must not
            // make the worker spin: back off as for a failed connect.
            if opened.elapsed() < Duration::from_secs(5) {
                let delay = retry_delay(reconnects.min(4));
                reconnects += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => break 'sessions,
                    _ = tokio::time::sleep(delay) => {}
                }
            } else {
                reconnects = 0;
            }
        }

        info!(in_flight = tracker.len(), "shutting down: no new jobs; finishing in-flight jobs");
        if let Some(s) = &last {
            let _ = s.ch.basic_cancel(s.tag.as_str().into(), BasicCancelOptions::default()).await;
        }
        tracker.close();
        if tokio::time::timeout(self.cfg.shutdown_timeout, tracker.wait()).await.is_err() {
            warn!(
                cut_off = tracker.len(),
                "shutdown deadline passed; unfinished jobs are not acked and will be redelivered"
            );
        }
        if let Some(s) = last {
            s.close().await;
        }
        info!("worker stopped");
        Ok(())
    }

    /// Handles one delivery to the end: publish its event, then ack or nack.
    async fn handle(self: Arc<Self>, d: Delivery, publisher: &Publisher, conn: &lapin::Connection) {
        let started = Instant::now();
        // x-delivery-count counts earlier deliveries; this is delivery number `attempt`.
        // Transient failures are retried within a delivery, so a count above 0 means
        // earlier deliveries were cut short (a worker died, a connection dropped).
        let attempt = queue::int_header(&d.properties, "x-delivery-count").unwrap_or(0) + 1;
        let message_id = d.properties.message_id().as_ref().map(|m| m.to_string());
        let producer = d.properties.user_id().as_ref().map(|u| u.to_string());
        let job_id =
            Job::salvage_id(&d.data, message_id.as_deref()).map(|j| j.to_string()).unwrap_or_else(|| "unknown".into());
        let span = info_span!("job", job.id = %job_id, attempt, producer = producer.as_deref().unwrap_or(""), key = tracing::field::Empty,
            artifacts = tracing::field::Empty, outcome = tracing::field::Empty);
        async move {
            info!(redelivered = d.redelivered, "job started");
            // A panic is a bug, never a reason to lose the job or the worker: it fails the job
            // (retrying would panic again), and the job's guards are dropped on unwind.
            let work = std::panic::AssertUnwindSafe(self.process(&d.data, producer.as_deref(), conn, attempt));
            let result = work.catch_unwind().await.unwrap_or_else(|_| {
                error!("panic while processing the job");
                Err((None, permanent(ErrorCode::Internal, "the worker hit an internal error (a bug)", None)))
            });
            let outcome = self.settle(&d, publisher, &job_id, result).await;
            tracing::Span::current().record("outcome", outcome);
            info!(outcome, duration_ms = started.elapsed().as_millis() as u64, "job finished");
        }
        .instrument(span)
        .await
    }

    /// Publishes the event and acks/nacks as the outcome requires. Returns the outcome name.
    async fn settle(
        &self,
        d: &Delivery,
        publisher: &Publisher,
        job_id: &str,
        result: Result<Event, (Option<String>, Failure)>,
    ) -> &'static str {
        let (event, ack, outcome) = match result {
            Ok(ev) => (ev, true, "succeeded"),
            Err((key, Failure::Permanent(info))) => {
                warn!(code = info.code.as_str(), error = %info.message, "job failed");
                (Event::failed(&self.cfg.source, job_id, key, info), false, "failed")
            }
            Err((_, Failure::Busy(msg))) => {
                // Another delivery of this job is still running: hand it back without an event;
                // when it comes again it is answered from that delivery's manifest.
                info!(reason = %msg, "job busy elsewhere; handing it back");
                if let Err(e) = d.reject(BasicRejectOptions { requeue: true }).await {
                    warn!(error = %e, "reject failed; the broker will redeliver after reconnecting");
                }
                return "requeued";
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
                (Event::failed(&self.cfg.source, job_id, key, info), false, "failed")
            }
        };
        let publish = || async { publisher.publish_event(&self.cfg.topology, &event).await };
        if let Err(e) = publish
            .retry(self.cfg.retry)
            .notify(|e, dur| warn!(error = %e, retry_in = ?dur, "publishing event failed"))
            .await
        {
            // Hand the job back: its redelivery is answered from the manifest (or fails again
            // the same way) and publishes the event then. On a dead channel the reject fails,
            // but the broker has requeued the message already.
            error!(error = %e, "could not publish the completion event; handing the job back");
            if let Err(e) = d.reject(BasicRejectOptions { requeue: true }).await {
                warn!(error = %e, "reject failed; the broker redelivers when the channel closes");
            }
            return "requeued";
        }
        let settled = if ack {
            d.ack(BasicAckOptions::default()).await
        } else {
            d.nack(BasicNackOptions { requeue: false, ..Default::default() }).await
        };
        if let Err(e) = settled {
            warn!(error = %e, "ack/nack failed after the event was published; a redelivery will re-publish it");
        }
        outcome
    }

    /// Does the work of one job; returns its succeeded event or why it failed.
    async fn process(
        &self,
        body: &[u8],
        producer: Option<&str>,
        conn: &lapin::Connection,
        attempt: i64,
    ) -> Result<Event, (Option<String>, Failure)> {
        let job = Job::parse(body).map_err(|e| (None, permanent(ErrorCode::InvalidJob, e.to_string(), None)))?;
        let key_name = Some(job.key.to_string());
        let span = tracing::Span::current();
        span.record("key", job.key.as_str());
        span.record("artifacts", job.artifacts.len());
        // Before anything is read or answered from an existing manifest.
        if let Err(denied) = self.authorizer.authorize(&job, producer) {
            return Err((key_name, self.deny(&job, producer, denied).await));
        }
        // One attempt per job id at a time, across all workers. A busy job (a duplicate of
        // one being signed) waits for the other delivery, which finishes within the retry
        // horizon, and is then answered from its manifest. Waiting never counts against it.
        let busy_since = Instant::now();
        let busy_wait = BUSY_WAIT;
        let (_in_flight, lock) = loop {
            let attempt = match self.in_flight.enter(job.job_id.as_str()) {
                None => Err(Failure::Busy(format!("job {} is being signed by this worker", job.job_id))),
                Some(guard) => match JobLock::acquire(conn, &self.cfg.topology, job.job_id.as_str()).await {
                    Ok(lock) => Ok((guard, lock)),
                    // The broker is in trouble (the connection is usually going away): hand the
                    // message back rather than fail the job; it comes again on a new connection.
                    Err(Failure::Transient(why)) => {
                        return Err((key_name, Failure::Busy(format!("cannot take the job lock: {why}"))));
                    }
                    Err(f) => Err(f),
                },
            };
            match attempt {
                Ok(held) => break held,
                Err(Failure::Busy(why)) if busy_since.elapsed() < busy_wait => {
                    if busy_since.elapsed() < Duration::from_millis(100) {
                        info!(reason = %why, "job busy elsewhere; waiting for the other delivery");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(f) => return Err((key_name, f)),
            }
        };
        // Counted only now, with the lock held: a delivery handed back while busy is not one
        // that died. Every earlier delivery died with its worker (or its connection): stop
        // before this one does too, and tell the producer, where the broker's own limit would
        // drop the message without a word.
        if attempt > self.cfg.max_deliveries {
            lock.release().await;
            let msg = format!(
                "delivered {attempt} times without finishing (workers died or lost the broker while handling it)"
            );
            return Err((key_name, permanent(ErrorCode::Internal, msg, None)));
        }
        // Transient trouble is retried here, backing off, for the whole retry horizon: the
        // lock stays held, and the delivery count stays for deliveries that were cut off.
        let mut first_failure: Option<Instant> = None;
        let mut retries = 0u32;
        let result = loop {
            match self.sign_job(&job, producer).await {
                Err(Failure::Transient(msg))
                    if first_failure.get_or_insert_with(Instant::now).elapsed() < self.cfg.retry_horizon =>
                {
                    let since = first_failure.map_or(Duration::ZERO, |t| t.elapsed());
                    let delay = retry_delay(retries).min(self.cfg.retry_horizon.saturating_sub(since));
                    retries += 1;
                    warn!(error = %msg, retries, retry_in = ?delay, "transient failure; retrying the job");
                    tokio::time::sleep(delay).await;
                }
                other => break other,
            }
        };
        lock.release().await;
        result.map_err(|f| (key_name, f))
    }

    /// Records a denial in the audit log; returns the job's failure.
    async fn deny(&self, job: &Job, producer: Option<&str>, denied: Denied) -> Failure {
        warn!(reason = %denied, "job denied by policy");
        let mut rec =
            AuditRecord::new(&self.cfg.source, Outcome::Denied, job.job_id.as_str(), producer, job.key.as_str());
        rec.reason = Some(denied.to_string());
        rec.artifacts = job
            .artifacts
            .iter()
            .map(|a| AuditArtifact { source: a.uri(), sha256: a.sha256.as_ref().map(|s| s.to_string()) })
            .collect();
        // Which key would have signed, if it exists: the record then says what was refused.
        let vault = self.vault.clone();
        let name = job.key.clone();
        rec.key_fingerprint = tokio::task::spawn_blocking(move || vault.active(&name).ok()).await.ok().flatten();
        match self.append_audit(rec).await {
            Ok(()) => permanent(ErrorCode::Unauthorized, denied.to_string(), None),
            Err(f) => f,
        }
    }

    /// Appends to the audit log, retrying store trouble; a log that cannot be written is a
    /// transient failure of the job (nothing is signed or denied unrecorded).
    async fn append_audit(&self, rec: AuditRecord) -> Result<(), Failure> {
        let append = || async { self.audit.append(&self.store, rec.clone()).await };
        append
            .retry(self.cfg.retry)
            .when(failure::store_retryable)
            .notify(|e, dur| warn!(error = %e, retry_in = ?dur, "audit append failed"))
            .await
            .map(|_| ())
            .map_err(|e| failure::store(Stage::Audit, e, None))
    }

    async fn sign_job(&self, job: &Job, producer: Option<&str>) -> Result<Event, Failure> {
        // Idempotency: a manifest under the prefix means the job (or another) is done.
        if let Some(ev) = self.existing(job).await? {
            info!("outputs already committed; re-publishing the succeeded event");
            return Ok(ev);
        }
        let key = self.signing_key(job).await?;

        let work = tempfile::Builder::new()
            .prefix("job-")
            .tempdir_in(&self.cfg.work_dir)
            .map_err(|e| Failure::Transient(format!("work dir: {e}")))?;
        let inputs = work.path().join("in");
        let staging = work.path().join("out");
        for d in [&inputs, &staging] {
            std::fs::create_dir_all(d).map_err(|e| Failure::Transient(format!("work dir: {e}")))?;
        }

        let mut artifacts = Vec::with_capacity(job.artifacts.len());
        for (i, a) in job.artifacts.iter().enumerate() {
            let path = inputs.join(i.to_string());
            let fetch = || async {
                self.store.get_to_file(a.bucket.as_str(), a.key.as_str(), &path, self.cfg.max_artifact_bytes).await
            };
            let got = fetch
                .retry(self.cfg.retry)
                .when(failure::store_retryable)
                .notify(|e, dur| warn!(error = %e, retry_in = ?dur, "fetch failed"))
                .await
                .map_err(|e| failure::store(Stage::Fetch, e, Some(a.uri())))?;
            if let Some(want) = &a.sha256
                && want.as_str() != got.sha256
            {
                return Err(permanent(
                    ErrorCode::ChecksumMismatch,
                    format!("{} has sha256 {}, the job says {want}", a.uri(), got.sha256),
                    Some(a.uri()),
                ));
            }
            // The policy limits what a key may produce: check the format signing will use.
            let format = match a.format {
                sign::Format::Auto => {
                    sign::detect_file(&path).map_err(|e| Failure::Transient(format!("staging: {e}")))?
                }
                f => f,
            };
            if let Err(denied) = self.authorizer.authorize_format(job, producer, format) {
                return Err(self.deny(job, producer, denied).await);
            }
            artifacts.push(Artifact {
                path,
                name: a.name().to_owned(),
                source: a.uri(),
                format,
                // Hashed while streaming it from S3: no second read.
                digest: Some((got.sha256, got.size)),
            });
        }

        let ctx =
            BatchContext { job_id: job.job_id.to_string(), key_name: job.key.to_string(), time: SystemTime::now() };
        let mut signer = (*key).clone();
        let staging_dir = staging.clone();
        let batch = tokio::task::spawn_blocking(move || sign::sign_batch(&mut signer, &artifacts, &ctx, &staging_dir))
            .await
            .map_err(|e| permanent(ErrorCode::Internal, format!("signing task failed: {e}"), None))?
            .map_err(Failure::from)?;

        // The signatures exist now: record them before any of them can be published.
        self.append_audit(self.signed_record(job, producer, &batch, &staging)).await?;

        // Outputs, then SHA256SUMS(.asc), then manifest.json.asc, then manifest.json last,
        // written only if absent: the commit point.
        for name in batch.files_in_commit_order() {
            let path = staging.join(&name);
            let dest = job.output.key(&name);
            let last = name == MANIFEST;
            let put = || async {
                self.store.put_file(job.output.bucket.as_str(), &dest, &path, content_type(&name), last).await
            };
            match put
                .retry(self.cfg.retry)
                .when(failure::store_retryable)
                .notify(|e, dur| warn!(error = %e, retry_in = ?dur, "upload failed"))
                .await
            {
                Ok(()) => {}
                Err(StoreError::Exists { .. }) if last => {
                    // Another delivery of the same job committed first.
                    return self.existing(job).await?.ok_or_else(|| Failure::Transient("manifest vanished".into()));
                }
                Err(e) => return Err(failure::store(Stage::Output, e, None)),
            }
        }
        Ok(event_from_manifest(&self.cfg.source, &batch.manifest, &job.output))
    }

    /// The audit record of a signed batch: inputs and every file about to be written.
    fn signed_record(
        &self,
        job: &Job,
        producer: Option<&str>,
        batch: &sign::Batch,
        staging: &std::path::Path,
    ) -> AuditRecord {
        let m = &batch.manifest;
        let mut rec =
            AuditRecord::new(&self.cfg.source, Outcome::Signed, job.job_id.as_str(), producer, job.key.as_str());
        rec.key_fingerprint = Some(m.key.fingerprint.clone());
        rec.artifacts = m
            .artifacts
            .iter()
            .map(|a| AuditArtifact { source: a.source.clone(), sha256: Some(a.input.sha256.clone()) })
            .collect();
        let object = |name: &str| format!("s3://{}/{}", job.output.bucket, job.output.key(name));
        rec.outputs =
            batch.outputs.iter().map(|o| AuditOutput { object: object(&o.name), sha256: o.sha256.clone() }).collect();
        rec.outputs.push(AuditOutput { object: object(sign::SHA256SUMS), sha256: batch.sha256sums.sha256.clone() });
        rec.outputs.push(AuditOutput { object: object(MANIFEST), sha256: batch.manifest_digest.sha256.clone() });
        for small in [sign::SHA256SUMS_ASC, sign::MANIFEST_ASC] {
            if let Ok((sha256, _)) = sign::digest_file(&staging.join(small)) {
                rec.outputs.push(AuditOutput { object: object(small), sha256 });
            }
        }
        rec
    }

    /// The active key of the job's key name, unsealed (or reused if unsealed within the
    /// cache lifetime). The active fingerprint is looked up on every job, so a rotation
    /// takes effect with the next job.
    async fn signing_key(&self, job: &Job) -> Result<Arc<SigningKey>, Failure> {
        let active = || async {
            let (vault, name) = (self.vault.clone(), job.key.clone());
            tokio::task::spawn_blocking(move || vault.active(&name)).await.map_err(vault_task)?
        };
        let fpr = active
            .retry(self.cfg.retry)
            .when(failure::vault_retryable)
            .notify(|e, dur| warn!(error = %e, retry_in = ?dur, "vault lookup failed"))
            .await?;
        let mut keys = self.keys.lock().await;
        let slot = (job.key.to_string(), fpr.clone());
        if let Some((k, at)) = keys.get(&slot)
            && at.elapsed() < self.cfg.key_cache_ttl
        {
            return Ok(k.clone());
        }
        keys.retain(|_, (_, at)| at.elapsed() < self.cfg.key_cache_ttl);
        let unseal = || async {
            let (vault, name, fpr) = (self.vault.clone(), job.key.clone(), fpr.clone());
            tokio::task::spawn_blocking(move || vault.unseal(&name, &fpr)).await.map_err(vault_task)?
        };
        let key = unseal
            .retry(self.cfg.retry)
            .when(failure::vault_retryable)
            .notify(|e, dur| warn!(error = %e, retry_in = ?dur, "unsealing failed"))
            .await?;
        let key = Arc::new(key);
        if !self.cfg.key_cache_ttl.is_zero() {
            keys.insert(slot, (key.clone(), Instant::now()));
        }
        Ok(key)
    }

    /// If the output prefix holds a manifest: the event for it when it is this job with the
    /// same inputs, a conflict otherwise.
    async fn existing(&self, job: &Job) -> Result<Option<Event>, Failure> {
        let key = job.output.key(MANIFEST);
        let get = || async { self.store.get_small(job.output.bucket.as_str(), &key, MANIFEST_LIMIT).await };
        let Some(bytes) = get
            .retry(self.cfg.retry)
            .when(failure::store_retryable)
            .notify(|e, dur| warn!(error = %e, retry_in = ?dur, "reading the manifest failed"))
            .await
            .map_err(|e| failure::store(Stage::Output, e, None))?
        else {
            return Ok(None);
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            permanent(
                ErrorCode::OutputConflict,
                format!("s3://{}/{key} exists but is not a signet manifest: {e}", job.output.bucket),
                None,
            )
        })?;
        if m.job_id != job.job_id.as_str() {
            return Err(permanent(
                ErrorCode::OutputConflict,
                format!(
                    "s3://{}/{} already holds the outputs of job {}",
                    job.output.bucket, job.output.prefix, m.job_id
                ),
                None,
            ));
        }
        if !same_inputs(job, &m) {
            return Err(permanent(
                ErrorCode::JobConflict,
                format!("job {} was already signed with different inputs or key", job.job_id),
                None,
            ));
        }
        Ok(Some(event_from_manifest(&self.cfg.source, &m, &job.output)))
    }
}

fn vault_task(e: tokio::task::JoinError) -> crate::vault::VaultError {
    crate::vault::VaultError::Unavailable(format!("vault task failed: {e}"))
}

fn same_inputs(job: &Job, m: &Manifest) -> bool {
    m.key.name == job.key.as_str()
        && m.artifacts.len() == job.artifacts.len()
        && job.artifacts.iter().zip(&m.artifacts).all(|(a, r)| {
            r.source == a.uri()
                && a.sha256.as_ref().is_none_or(|s| s.as_str() == r.input.sha256)
                && (a.format == sign::Format::Auto || a.format == r.format)
        })
}

fn parse_uri(uri: &str) -> ObjectRef {
    let rest = uri.strip_prefix("s3://").unwrap_or(uri);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    ObjectRef { bucket: bucket.into(), key: key.into() }
}

/// The succeeded event for a committed manifest.
pub fn event_from_manifest(source: &str, m: &Manifest, out: &OutputSpec) -> Event {
    let outputs = m
        .artifacts
        .iter()
        .flat_map(|a| {
            a.outputs.iter().map(move |o| OutputRef {
                bucket: out.bucket.to_string(),
                key: out.key(&o.name),
                sha256: o.sha256.clone(),
                size: o.size,
                format: a.format,
                source: parse_uri(&a.source),
            })
        })
        .collect();
    Event::new(
        source,
        EventData {
            job_id: m.job_id.clone(),
            key: Some(m.key.name.clone()),
            key_fingerprint: Some(m.key.fingerprint.clone()),
            outputs,
            sha256sums: Some(ObjectRef { bucket: out.bucket.to_string(), key: out.key(sign::SHA256SUMS) }),
            manifest: Some(ObjectRef { bucket: out.bucket.to_string(), key: out.key(MANIFEST) }),
            error: None,
        },
    )
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("");
    match ext {
        "rpm" => "application/x-rpm",
        "deb" => "application/vnd.debian.binary-package",
        "asc" | "gpg" => "application/pgp-signature",
        "json" => "application/json",
        _ if ["SHA256SUMS", "InRelease", "Release"].contains(&name) => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
