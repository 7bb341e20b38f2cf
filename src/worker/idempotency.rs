//! A job already done: a manifest under its output prefix answers a redelivery (or a
//! duplicate submission) without signing again, if it is this job with the same inputs.

use super::Worker;
use super::failure::{self, Failure, Stage, permanent};
use crate::event::{self, ErrorCode, Event};
use crate::job::Job;
use crate::sign::manifest::Manifest;
use crate::sign::{self, MANIFEST};
use crate::store::ObjectStore;

/// Largest manifest the worker reads back.
const MANIFEST_LIMIT: u64 = 16 * 1024 * 1024;

impl<S: ObjectStore + 'static> Worker<S> {
    /// If the output prefix holds a manifest: the event for it when it is this job with the
    /// same inputs, a conflict otherwise.
    pub(super) async fn existing(&self, job: &Job) -> Result<Option<Event>, Failure> {
        let key = job.output.key(MANIFEST);
        let get = || async { self.store.get_small(job.output.bucket.as_str(), &key, MANIFEST_LIMIT).await };
        let Some(bytes) = self
            .store_call("manifest", "reading the manifest failed", get)
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
        Ok(Some(event::from_manifest(&self.cfg.source, &m, &job.output)))
    }
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
