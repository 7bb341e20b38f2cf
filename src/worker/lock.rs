//! One attempt per job id at a time: an in-process guard (two deliveries to the same
//! worker) and a broker-side lock (deliveries to different workers). Both are released
//! when dropped, so a job that ends any way, a panic included, frees them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::failure::{self, Failure};
use crate::queue::Topology;

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
        let broker = |e: lapin::Error| Failure::Transient(format!("broker: {e}"));
        let ch = conn.create_channel().await.map_err(broker)?;
        let name = format!("{}.lock.{job_id}", topology.jobs.trim_end_matches(".jobs"));
        let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        match ch.queue_declare(name.as_str().into(), opts, FieldTable::default()).await {
            Ok(_) => Ok(JobLock { ch: Some(ch), name }),
            Err(e) if failure::resource_locked(&e) => {
                Err(Failure::Busy(format!("job {job_id} is being signed by another delivery")))
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
