//! The stages of one job, with its locks held: fetch every artifact (hashing it as it
//! streams), check the policy on each format, sign the batch, record it in the audit log,
//! then upload the outputs in commit order with the manifest last. Transient trouble is
//! retried here, the whole job backing off, for the retry horizon.

use std::time::{Duration, Instant, SystemTime};

use backon::Retryable;
use tracing::{info, warn};

use super::approval::Approved;
use super::failure::{self, Failure, Stage, permanent};
use super::{Worker, lock, retry_delay};
use crate::event::{self, ErrorCode, Event};
use crate::job::Job;
use crate::key::SigningKey;
use crate::observe;
use crate::sign::{self, Artifact, BatchContext, MANIFEST};
use crate::store::{CopyTail, ObjectStore, StoreError};

/// How long a duplicate delivery waits for the job's lock before handing the message back
/// (a requeue, counted by the broker). Short enough that waiting plus the job's own retry
/// horizon stays under RabbitMQ's 30 min consumer timeout with the default horizon.
pub(super) const BUSY_WAIT: Duration = Duration::from_secs(5 * 60);

impl<S: ObjectStore + 'static> Worker<S> {
    /// Does the work of one job; returns its succeeded event or why it failed (with the key
    /// name, once the job has been read).
    pub(super) async fn process(
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
        // signet's own state is never an output location: a detached job could otherwise
        // plant a forged approval request or audit record there.
        if let Some((bucket, prefix, what)) = self
            .cfg
            .reserved
            .iter()
            .find(|(b, p, _)| job.output.bucket.as_str() == b && job.output.prefix.as_str().starts_with(p.as_str()))
        {
            let denied = crate::policy::Denied(format!(
                "s3://{}/{} is inside {what} (s3://{bucket}/{prefix}): no job may write there",
                job.output.bucket, job.output.prefix
            ));
            return Err((key_name, self.deny(&job, producer, denied).await));
        }
        // One attempt per job id at a time, across all workers; waiting never counts.
        let held = lock::hold(&self.in_flight, conn, &self.cfg.topology, job.job_id.as_str(), BUSY_WAIT)
            .await
            .map_err(|f| (key_name.clone(), f))?;
        // Counted only now, with the lock held: a delivery handed back while busy is not one
        // that died. Every earlier delivery died with its worker (or its connection): stop
        // before this one does too, and tell the producer, where the broker's own limit would
        // drop the message without a word.
        if attempt > self.cfg.max_deliveries {
            held.release().await;
            let msg = format!(
                "delivered {attempt} times without finishing (workers died or lost the broker while handling it)"
            );
            return Err((key_name, permanent(ErrorCode::Internal, msg, None)));
        }
        // Transient trouble is retried here, backing off, for the whole retry horizon: the
        // lock stays held, and the delivery count stays for deliveries that were cut off.
        let result = self.within_horizon(|| self.sign_job(&job, producer, None)).await;
        held.release().await;
        result.map_err(|f| (key_name, f))
    }

    /// Runs `attempt` until it succeeds, fails for good, or has failed transiently for the
    /// whole retry horizon, backing off between tries.
    pub(super) async fn within_horizon<T, F, Fut>(&self, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut first_failure: Option<Instant> = None;
        let mut retries = 0u32;
        loop {
            match attempt().await {
                Err(Failure::Transient(msg))
                    if first_failure.get_or_insert_with(Instant::now).elapsed() < self.cfg.retry_horizon =>
                {
                    let since = first_failure.map_or(Duration::ZERO, |t| t.elapsed());
                    let delay = retry_delay(retries).min(self.cfg.retry_horizon.saturating_sub(since));
                    retries += 1;
                    observe::retry("job");
                    warn!(error = %msg, retries, retry_in = ?delay, "transient failure; retrying the job");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// A work directory for one job, with `in/` and `out/` made.
    pub(super) fn work_dir(&self) -> Result<tempfile::TempDir, Failure> {
        let work = tempfile::Builder::new()
            .prefix("job-")
            .tempdir_in(&self.cfg.work_dir)
            .map_err(|e| Failure::Transient(format!("work dir: {e}")))?;
        for d in ["in", "out"] {
            std::fs::create_dir_all(work.path().join(d)).map_err(|e| Failure::Transient(format!("work dir: {e}")))?;
        }
        Ok(work)
    }

    /// Signs `job` and commits its outputs. A job whose key needs approvals becomes a
    /// pending request instead, unless `approved` says it has them.
    pub(super) async fn sign_job(
        &self,
        job: &Job,
        producer: Option<&str>,
        approved: Option<&Approved>,
    ) -> Result<Event, Failure> {
        // Idempotency: a manifest under the prefix means the job (or another) is done.
        if let Some(ev) = self.existing(job).await? {
            info!("outputs already committed; re-publishing the succeeded event");
            return Ok(ev);
        }
        if approved.is_none()
            && let Some(rule) = self.authorizer.approval(&job.key)
        {
            return self.request_approval(job, producer.unwrap_or_default(), rule).await;
        }
        let key = self.signing_key(job, approved.map(|a| a.fingerprint.as_str())).await?;

        let work = self.work_dir()?;
        let inputs = work.path().join("in");
        let staging = work.path().join("out");
        let (artifacts, etags) = self.fetch_artifacts(job, producer, &inputs).await?;

        let ctx = BatchContext {
            job_id: job.job_id.to_string(),
            key_name: job.key.to_string(),
            time: SystemTime::now(),
            approvals: approved.map(|a| a.approvers.clone()).unwrap_or_default(),
            parallel: if self.cfg.sign_threads == 0 { sign::parallelism(&key) } else { self.cfg.sign_threads },
            in_place: false,
            replace_signatures: job.replace_signatures,
        };
        let formats: Vec<&'static str> = artifacts.iter().map(|a| a.format.as_str()).collect();
        let mut signer = (*key).clone();
        let staging_dir = staging.clone();
        let batch = tokio::task::spawn_blocking(move || sign::sign_batch(&mut signer, &artifacts, &ctx, &staging_dir))
            .await
            .map_err(|e| permanent(ErrorCode::Internal, format!("signing task failed: {e}"), None))?
            .map_err(Failure::from)?;
        formats.into_iter().for_each(observe::signature);

        // The signatures exist now: record them before any of them can be published.
        self.append_audit(self.signed_record(job, producer, &batch)).await?;

        // Outputs, then SHA256SUMS(.asc), then manifest.json.asc, then manifest.json last,
        // written only if absent: the commit point.
        for name in batch.files_in_commit_order() {
            let path = staging.join(&name);
            let dest = job.output.key(&name);
            let last = name == MANIFEST;
            if let Some(tail) = self.copy_tail(job, &batch, &etags, &name) {
                let put = || async {
                    self.store
                        .put_file_copying_tail(job.output.bucket.as_str(), &dest, &path, content_type(&name), &tail)
                        .await
                };
                let reused = self
                    .store_call("output", "upload failed", put)
                    .await
                    .map_err(|e| failure::store(Stage::Output, e, None))?;
                observe::copied_tail(reused.uploaded, reused.copied);
                info!(output = %name, uploaded = reused.uploaded, copied = reused.copied, "assembled in S3 from the input");
                continue;
            }
            let put = || async {
                self.store.put_file(job.output.bucket.as_str(), &dest, &path, content_type(&name), last).await
            };
            match self.store_call("output", "upload failed", put).await {
                Ok(()) => {}
                Err(StoreError::Exists { .. }) if last => {
                    // Another delivery of the same job committed first.
                    return self.existing(job).await?.ok_or_else(|| Failure::Transient("manifest vanished".into()));
                }
                Err(e) => return Err(failure::store(Stage::Output, e, None)),
            }
        }
        Ok(event::from_manifest(&self.cfg.source, &batch.manifest, &job.output))
    }

    /// Fetches every artifact of `job` into `inputs` (hashing it as it streams), checks it
    /// against the digest the job gives, and checks the policy on the format it will be
    /// signed in. Returns the artifacts and the ETag of each object as fetched.
    pub(super) async fn fetch_artifacts(
        &self,
        job: &Job,
        producer: Option<&str>,
        inputs: &std::path::Path,
    ) -> Result<(Vec<Artifact>, Vec<Option<String>>), Failure> {
        let mut artifacts = Vec::with_capacity(job.artifacts.len());
        let mut etags = Vec::with_capacity(job.artifacts.len());
        for (i, a) in job.artifacts.iter().enumerate() {
            let path = inputs.join(i.to_string());
            let fetch = || async {
                self.store.get_to_file(a.bucket.as_str(), a.key.as_str(), &path, self.cfg.max_artifact_bytes).await
            };
            let got = self
                .store_call("fetch", "fetch failed", fetch)
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
            etags.push(got.etag);
        }
        Ok((artifacts, etags))
    }

    /// How to upload output `name` by copying its unchanged tail from its input object in
    /// S3, if it is a signed RPM of at least `copy_tail_bytes` whose input came with an ETag.
    fn copy_tail(&self, job: &Job, batch: &sign::Batch, etags: &[Option<String>], name: &str) -> Option<CopyTail> {
        let output = batch.outputs.iter().find(|o| o.name == name)?;
        let same = output.same_tail?;
        if self.cfg.copy_tail_bytes == 0 || output.size < self.cfg.copy_tail_bytes {
            return None;
        }
        let source = job.artifacts.get(output.artifact)?;
        Some(CopyTail {
            source_bucket: source.bucket.to_string(),
            source_key: source.key.to_string(),
            etag: etags.get(output.artifact)?.clone()?,
            input_from: same.input_from,
            output_from: same.output_from,
        })
    }

    /// The active key of the job's key name (or its key `fpr`, the one a request was
    /// approved for), unsealed (or reused if unsealed within the cache lifetime). The active
    /// fingerprint is looked up on every job, so a rotation takes effect with the next job.
    async fn signing_key(&self, job: &Job, fpr: Option<&str>) -> Result<std::sync::Arc<SigningKey>, Failure> {
        let fpr = match fpr {
            Some(f) => f.to_owned(),
            None => self.active_fingerprint(job).await?,
        };
        // On every job, cached key or not: a revocation takes effect with the next job.
        let (vault, name, f) = (self.vault.clone(), job.key.clone(), fpr.clone());
        tokio::task::spawn_blocking(move || vault.check_not_revoked(&name, &f)).await.map_err(vault_task)??;
        let unseal = async || {
            let unseal_once = || async {
                let (vault, name, fpr) = (self.vault.clone(), job.key.clone(), fpr.clone());
                tokio::task::spawn_blocking(move || vault.unseal(&name, &fpr)).await.map_err(vault_task)?
            };
            unseal_once
                .retry(self.cfg.retry)
                .when(failure::vault_retryable)
                .notify(|e, dur| {
                    observe::retry("vault");
                    warn!(error = %e, retry_in = ?dur, "unsealing failed")
                })
                .await
        };
        Ok(self.keys.get(job.key.as_str(), &fpr, self.cfg.key_cache_ttl, unseal).await?)
    }

    /// The fingerprint of the active key of the job's key name.
    pub(super) async fn active_fingerprint(&self, job: &Job) -> Result<String, Failure> {
        let active = || async {
            let (vault, name) = (self.vault.clone(), job.key.clone());
            tokio::task::spawn_blocking(move || vault.active(&name)).await.map_err(vault_task)?
        };
        Ok(active
            .retry(self.cfg.retry)
            .when(failure::vault_retryable)
            .notify(|e, dur| {
                observe::retry("vault");
                warn!(error = %e, retry_in = ?dur, "vault lookup failed")
            })
            .await?)
    }
}

fn vault_task(e: tokio::task::JoinError) -> crate::vault::VaultError {
    crate::vault::VaultError::Unavailable(format!("vault task failed: {e}"))
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
