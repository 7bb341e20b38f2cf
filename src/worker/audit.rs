//! What a job leaves in the audit log: a record of every denial, and of every signing run
//! after its signatures are made and checked and before any output is written.

use tracing::warn;

use super::Worker;
use super::failure::{self, Failure, Stage, permanent};
use crate::audit::{AuditArtifact, AuditOutput, AuditRecord, Outcome};
use crate::event::ErrorCode;
use crate::job::Job;
use crate::observe;
use crate::policy::Denied;
use crate::sign;
use crate::store::ObjectStore;

impl<S: ObjectStore + 'static> Worker<S> {
    /// Records a denial in the audit log; returns the job's failure.
    pub(super) async fn deny(&self, job: &Job, producer: Option<&str>, denied: Denied) -> Failure {
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
    pub(super) async fn append_audit(&self, rec: AuditRecord) -> Result<(), Failure> {
        if !self.audit.is_open().await {
            self.in_audit_index(|| self.audit.open(&self.store))
                .await
                .map_err(|e| failure::store(Stage::Audit, e, None))?;
        }
        let append = || async { self.audit.append(&self.store, rec.clone()).await };
        self.store_call("audit", "audit append failed", append)
            .await
            .map(|_| observe::audit_appended())
            .map_err(|e| failure::store(Stage::Audit, e, None))
    }

    /// Runs `op` on the audit index (opening or closing this worker's chain) under the
    /// broker's index lock, retrying store trouble, so workers that start or stop together
    /// take turns rather than race for the index's head.
    pub(super) async fn in_audit_index<F, Fut>(&self, op: F) -> Result<(), crate::store::StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::store::StoreError>>,
    {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let lock = match &conn {
            Some(c) => super::lock::audit_index(c, &self.cfg.topology, std::time::Duration::from_secs(10)).await,
            None => None,
        };
        let r = self.store_call("audit", "audit index append failed", op).await;
        if let Some(l) = lock {
            l.release().await;
        }
        r
    }

    /// The audit record of a signed batch: its inputs, and every file about to be written
    /// with the digest computed while it was staged.
    pub(super) fn signed_record(&self, job: &Job, producer: Option<&str>, batch: &sign::Batch) -> AuditRecord {
        let m = &batch.manifest;
        let mut rec =
            AuditRecord::new(&self.cfg.source, Outcome::Signed, job.job_id.as_str(), producer, job.key.as_str());
        rec.key_fingerprint = Some(m.key.fingerprint.clone());
        rec.approvers = m.approvals.clone();
        rec.artifacts = m
            .artifacts
            .iter()
            .map(|a| AuditArtifact { source: a.source.clone(), sha256: Some(a.input.sha256.clone()) })
            .collect();
        rec.outputs = batch
            .digests_in_commit_order()
            .into_iter()
            .map(|d| AuditOutput {
                object: format!("s3://{}/{}", job.output.bucket, job.output.key(&d.name)),
                sha256: d.sha256,
            })
            .collect();
        rec
    }
}
