//! One attempt per job id at a time: an in-process guard (two deliveries to the same
//! worker) and a broker-side lock (deliveries to different workers), taken together by
//! [`hold`]. Both are released when dropped, so a job that ends any way, a panic included,
//! frees them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::failure::{self, Failure};
use crate::queue::Topology;

/// The lock of the audit index, taken while a worker opens or closes its chain there, so
/// that workers starting or stopping together take turns instead of racing for the index's
/// head (a lost race costs a 412 and a GET). Waits up to `wait`; `None` if it could not be
/// had, and the caller appends without it (the index's own conditional writes keep it
/// correct).
pub async fn audit_index(conn: &lapin::Connection, topology: &Topology, wait: Duration) -> Option<JobLock> {
    let since = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match JobLock::acquire_named(conn, topology.audit_index_lock(), "the audit index").await {
            Ok(lock) => return Some(lock),
            Err(Failure::Busy(_)) if since.elapsed() < wait => {
                // Each try opens a channel: back off (with jitter) when many workers wait.
                tokio::time::sleep(pause.mul_f64(1.0 + rand::random::<f64>())).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(_) => return None,
        }
    }
}

/// Both locks of a job, held until dropped (or [`Held::release`]d).
pub struct Held {
    _in_flight: InFlightGuard,
    lock: JobLock,
}

impl Held {
    /// Releases the broker lock and waits for the broker to confirm.
    pub async fn release(self) {
        self.lock.release().await;
    }
}

/// Takes both locks of `job_id`. A busy job (a duplicate of one being signed, here or on
/// another worker) waits up to `busy_wait` for the other delivery, which then has usually
/// committed, so this one is answered from its manifest; after that it is [`Failure::Busy`].
/// Broker trouble is `Busy` too: the message goes back rather than the job failing.
pub async fn hold(
    in_flight: &InFlight,
    conn: &lapin::Connection,
    topology: &Topology,
    job_id: &str,
    busy_wait: Duration,
) -> Result<Held, Failure> {
    let since = Instant::now();
    loop {
        let attempt = match in_flight.enter(job_id) {
            None => Err(Failure::Busy(format!("job {job_id} is being signed by this worker"))),
            Some(guard) => match JobLock::acquire(conn, topology, job_id).await {
                Ok(lock) => Ok(Held { _in_flight: guard, lock }),
                Err(Failure::Transient(why)) => return Err(Failure::Busy(format!("cannot take the job lock: {why}"))),
                Err(f) => Err(f),
            },
        };
        match attempt {
            Ok(held) => return Ok(held),
            Err(Failure::Busy(why)) if since.elapsed() < busy_wait => {
                if since.elapsed() < Duration::from_millis(100) {
                    tracing::info!(reason = %why, "job busy elsewhere; waiting for the other delivery");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(f) => return Err(f),
        }
    }
}

/// The job ids in flight in this process.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

/// Holds a job id in [`InFlight`] until dropped.
pub struct InFlightGuard {
    set: InFlight,
    id: String,
}

impl InFlight {
    /// Marks `id` in flight; `None` if it already is.
    pub fn enter(&self, id: &str) -> Option<InFlightGuard> {
        // A poisoned lock only means another job panicked while holding it; the set is valid.
        let inserted = self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned());
        inserted.then(|| InFlightGuard { set: self.clone(), id: id.to_owned() })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// A per-job lock held as an exclusive queue `NS.lock.JOB_ID` on its own channel. The broker
/// deletes it when the holder's connection dies; release or drop deletes it otherwise.
pub struct JobLock {
    ch: Option<lapin::Channel>,
    name: String,
}

impl JobLock {
    /// Takes the lock, or says the job is busy elsewhere.
    pub async fn acquire(conn: &lapin::Connection, topology: &Topology, job_id: &str) -> Result<JobLock, Failure> {
        Self::acquire_named(conn, topology.lock_queue(job_id), &format!("job {job_id}")).await
    }

    /// Takes the lock queue `name` (`what` names it in the busy message).
    async fn acquire_named(conn: &lapin::Connection, name: String, what: &str) -> Result<JobLock, Failure> {
        let broker = |e: lapin::Error| Failure::Transient(format!("broker: {e}"));
        let ch = conn.create_channel().await.map_err(broker)?;
        let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        match ch.queue_declare(name.as_str().into(), opts, FieldTable::default()).await {
            Ok(_) => Ok(JobLock { ch: Some(ch), name }),
            Err(e) if failure::resource_locked(&e) => {
                Err(Failure::Busy(format!("{what} is being signed by another delivery")))
            }
            Err(e) => Err(broker(e)),
        }
    }

    /// Releases the lock and waits for the broker to confirm.
    pub async fn release(mut self) {
        if let Some(ch) = self.ch.take() {
            let _ = ch.queue_delete(self.name.as_str().into(), QueueDeleteOptions::default()).await;
            let _ = ch.close(200, "job done".into()).await;
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // Not released in order (a panic, a cancelled task): delete the queue in the
        // background (an exclusive queue lives as long as its connection, not its channel).
        if let Some(ch) = self.ch.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let name = std::mem::take(&mut self.name);
            rt.spawn(async move {
                let _ = ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
                let _ = ch.close(200, "job lock dropped".into()).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_job_frees_its_job_id() {
        let set = InFlight::default();
        let s = set.clone();
        let r = std::panic::catch_unwind(move || {
            let _guard = s.enter("job-1").expect("free");
            assert!(s.enter("job-1").is_none(), "a second delivery must find it busy");
            panic!("a bug in the job");
        });
        assert!(r.is_err());
        assert!(set.enter("job-1").is_some(), "the job id stayed taken after the panic");
    }
}
