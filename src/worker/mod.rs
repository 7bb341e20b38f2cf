//! The worker: consume → authorize → lock → fetch → sign → audit → write → publish → settle.
//!
//! One file per stage of a job:
//! - [`session`]: the broker connection (consume with a prefetch, publish with confirms);
//! - [`delivery`]: one delivery from start to settlement (event first, then ack, dead-letter
//!   or hand back);
//! - [`lock`]: one attempt per job id at a time, in this process and across workers;
//! - [`pipeline`]: fetch, sign, audit, upload in commit order, with the retry horizon;
//! - [`idempotency`]: a job already done is answered from its manifest;
//! - [`keys`]: unsealed keys, cached per key;
//! - [`audit`]: the records of denials and signing runs;
//! - [`approval`]: keys that need approvals: pending requests, approval messages, expiry;
//! - [`failure`]: how every error is classified (permanent, transient, busy).
//!
//! Every job ends in exactly one of three ways, decided in `delivery`:
//! - done: outputs written (manifest last), succeeded event confirmed, then ack;
//! - permanent failure (bad input): failed event confirmed, then nack without requeue, so
//!   the broker dead-letters the message to `NS.jobs.dead`; nothing was written;
//! - transient failure (store, vault or broker trouble): retried in place, then the whole
//!   job, for the retry horizon; then a failed `internal` event and a dead-letter.
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
//!
//! The worker stops consuming and drains its jobs on SIGTERM/SIGINT (within the shutdown
//! timeout), once idle for `exit_when_idle`, or once it has taken `max_jobs` deliveries.

mod approval;
mod audit;
mod delivery;
mod failure;
mod idempotency;
mod keys;
mod lock;
mod pipeline;
mod session;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::ExponentialBuilder;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::approval::Requests;
use crate::audit::AuditLog;
use crate::observe::{self, Health};
use crate::policy::Authorizer;
use crate::queue::{JobDelivery, Publisher, Topology};
use crate::store::{ObjectStore, StoreError};
use crate::vault::Vault;
use keys::KeyCache;
use lock::InFlight;
use session::Session;

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
    /// Signed RPMs at least this big are assembled in S3 from their input (0: never).
    pub copy_tail_bytes: u64,
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
    /// Artifacts of a job signed at once (0: [`crate::sign::parallelism`]).
    pub sign_threads: usize,
    /// Exit (after draining) once no job has been in flight or arrived for this long.
    pub exit_when_idle: Option<Duration>,
    /// Exit (after draining) once this many deliveries have been taken.
    pub max_jobs: Option<u64>,
    /// Where pending approval requests are kept (needed when a key needs approvals).
    pub approvals: Option<Requests>,
    /// Locations no job may write its outputs into, whatever the policy says: the audit
    /// log, the approvals location, the vault (bucket, prefix, what it is).
    pub reserved: Vec<(String, String, &'static str)>,
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

/// A worker's shared state.
pub struct Worker<S> {
    cfg: WorkerConfig,
    store: S,
    vault: Arc<Vault>,
    authorizer: Authorizer,
    audit: AuditLog,
    keys: KeyCache,
    /// Job ids in flight in this process (the broker lock only excludes other connections).
    in_flight: InFlight,
    health: Health,
    /// When a job last arrived or finished (for `exit_when_idle`).
    last_activity: Mutex<Instant>,
    /// The current broker connection (for the audit index lock).
    conn: Mutex<Option<Arc<lapin::Connection>>>,
    /// The current session's publisher (for approval expiry timers).
    publisher: Mutex<Option<Publisher>>,
}

/// Why the worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Signal,
    Idle,
    MaxJobs,
}

impl<S: ObjectStore + 'static> Worker<S> {
    pub fn new(cfg: WorkerConfig, store: S, vault: Vault, authorizer: Authorizer, audit: AuditLog) -> Arc<Self> {
        Arc::new(Worker {
            cfg,
            store,
            vault: Arc::new(vault),
            authorizer,
            audit,
            keys: KeyCache::default(),
            in_flight: Default::default(),
            health: Health::default(),
            last_activity: Mutex::new(Instant::now()),
            conn: Mutex::new(None),
            publisher: Mutex::new(None),
        })
    }

    /// What `/readyz` reports: ready while connected and consuming.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Runs a store call with the worker's in-place retry policy: transient errors are
    /// retried with backoff, each retry counted under `stage` and logged as `what`.
    async fn store_call<T, F, Fut>(&self, stage: &'static str, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        use backon::Retryable;
        op.retry(self.cfg.retry)
            .when(failure::store_retryable)
            .notify(|e, dur| {
                observe::retry(stage);
                warn!(error = %e, retry_in = ?dur, "{what}")
            })
            .await
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_activity.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// Runs until `shutdown` is cancelled (or the worker is idle for `exit_when_idle`, or has
    /// taken `max_jobs` deliveries), then drains in-flight jobs.
    ///
    /// A lost broker connection (a restart, a network cut) is replaced by a new one: topology
    /// declared again, consumer registered again. Jobs still running on the old connection
    /// finish, but cannot be acked there; the broker requeued their messages when the old
    /// connection died, and the redeliveries are answered from the committed manifests.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.cfg.work_dir)?;
        let tracker = TaskTracker::new();
        let mut reconnects = 0u32;
        let mut sessions = 0u64;
        let mut taken = 0u64;
        let mut last: Option<Session> = None;
        let stop = 'sessions: loop {
            // With --max-jobs, never hold more deliveries than are still to be taken.
            let left = self.cfg.max_jobs.map_or(u64::MAX, |m| m.saturating_sub(taken));
            let prefetch = u16::try_from(left).unwrap_or(u16::MAX).min(self.cfg.concurrency).max(1);
            let mut session = match Session::open(&self.cfg, prefetch).await {
                Ok(s) => s,
                Err(e) => {
                    let delay = retry_delay(reconnects.min(4));
                    reconnects += 1;
                    warn!(error = %e, retry_in = ?delay, "cannot reach the broker; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'sessions Stop::Signal,
                        _ = tokio::time::sleep(delay) => continue 'sessions,
                    }
                }
            };
            sessions += 1;
            if sessions > 1 {
                observe::amqp_reconnect();
            }
            if let Some(old) = last.take() {
                tokio::spawn(old.close());
            }
            *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.conn.clone());
            *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.publisher.clone());
            let opened = Instant::now();
            // Idle time counts only while consuming: a worker that cannot reach the broker
            // has not seen the queue empty.
            self.touch();
            self.health.set_ready(true);
            info!(queue = %self.cfg.topology.jobs, concurrency = self.cfg.concurrency, "worker consuming");
            let idle_check = self.cfg.exit_when_idle.map(|d| d.min(Duration::from_secs(1)));
            loop {
                tokio::select! {
                    // In this order: a delivery that is already here is taken before the idle
                    // check can decide that nothing came.
                    biased;
                    _ = shutdown.cancelled() => {
                        last = Some(session);
                        break 'sessions Stop::Signal;
                    }
                    _ = tokio::time::sleep(idle_check.unwrap_or(Duration::MAX)), if idle_check.is_some() => {
                        if let Some(idle) = self.cfg.exit_when_idle
                            && tracker.is_empty()
                            && self.idle_for() >= idle
                        {
                            info!(idle = ?idle, "no job in flight or arriving: exiting when idle");
                            last = Some(session);
                            break 'sessions Stop::Idle;
                        }
                    }
                    next = session.consumer.next() => match next {
                        Some(Ok(delivery)) => {
                            taken += 1;
                            self.touch();
                            let me = self.clone();
                            let publisher = session.publisher.clone();
                            let conn = session.conn.clone();
                            tracker.spawn(async move { me.handle(JobDelivery::new(delivery), &publisher, &conn).await });
                            if self.cfg.max_jobs.is_some_and(|m| taken >= m) {
                                info!(taken, "took --max-jobs deliveries; finishing them, then exiting");
                                last = Some(session);
                                break 'sessions Stop::MaxJobs;
                            }
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "broker connection lost; reconnecting");
                            break;
                        }
                        None => {
                            warn!("consumer cancelled by the broker; reconnecting");
                            break;
                        }
                    },
                    next = async { session.approvals.as_mut()?.next().await }, if session.approvals.is_some() => match next {
                        Some(Ok(delivery)) => {
                            taken += 1;
                            self.touch();
                            let me = self.clone();
                            let publisher = session.publisher.clone();
                            let conn = session.conn.clone();
                            tracker.spawn(async move { me.handle_approval(JobDelivery::new(delivery), &publisher, &conn).await });
                            if self.cfg.max_jobs.is_some_and(|m| taken >= m) {
                                info!(taken, "took --max-jobs deliveries; finishing them, then exiting");
                                last = Some(session);
                                break 'sessions Stop::MaxJobs;
                            }
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "broker connection lost; reconnecting");
                            break;
                        }
                        None => {
                            warn!("approvals consumer cancelled by the broker; reconnecting");
                            break;
                        }
                    }
                }
            }
            self.health.set_ready(false);
            last = Some(session);
            // A session that ends at once (a broker that accepts and then drops us) must not
            // make the worker spin: back off as for a failed connect.
            if opened.elapsed() < Duration::from_secs(5) {
                let delay = retry_delay(reconnects.min(4));
                reconnects += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => break 'sessions Stop::Signal,
                    _ = tokio::time::sleep(delay) => {}
                }
            } else {
                reconnects = 0;
            }
        };

        self.health.set_ready(false);
        info!(in_flight = tracker.len(), reason = ?stop, "shutting down: no new jobs; finishing in-flight jobs");
        if let Some(s) = &mut last {
            s.stop_consuming().await;
            // Deliveries the broker sent before it saw the cancel (with --max-jobs, or at an
            // idle exit) go back unstarted, rather than waiting in the client's buffer until
            // the connection closes.
            let mut handed_back = 0;
            for consumer in std::iter::once(&mut s.consumer).chain(s.approvals.as_mut()) {
                while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                    if let Err(e) = JobDelivery::new(d).hand_back().await {
                        warn!(error = %e, "could not hand a delivery back; the broker requeues it when we disconnect");
                    }
                    handed_back += 1;
                }
            }
            if handed_back > 0 {
                info!(handed_back, "handed back deliveries that arrived while stopping");
            }
        }
        tracker.close();
        // After a signal the jobs get the shutdown timeout; after an idle or --max-jobs exit
        // they finish in their own time, unless a signal comes meanwhile.
        let drained = match stop {
            Stop::Signal => tokio::time::timeout(self.cfg.shutdown_timeout, tracker.wait()).await.is_ok(),
            Stop::Idle | Stop::MaxJobs => tokio::select! {
                _ = tracker.wait() => true,
                _ = shutdown.cancelled() => tokio::time::timeout(self.cfg.shutdown_timeout, tracker.wait()).await.is_ok(),
            },
        };
        if !drained {
            warn!(
                cut_off = tracker.len(),
                "shutdown deadline passed; unfinished jobs are not acked and will be redelivered"
            );
        }
        // The chain ends here: say so in the index, so `audit verify` knows its last record.
        if drained && let Err(e) = self.in_audit_index(|| self.audit.close(&self.store)).await {
            warn!(error = %e, chain = self.audit.chain(), "could not close the audit chain; it stays open (it still verifies)");
        }
        if let Some(s) = last {
            s.close().await;
        }
        info!("worker stopped");
        Ok(())
    }
}
