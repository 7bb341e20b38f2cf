//! What a failure means for a job, decided in one place for every stage and every kind of
//! error: permanent (the input or the request is wrong: fail now, dead-letter), transient
//! (infrastructure trouble: retry within the retry horizon), or busy (another delivery of
//! the same job holds its lock: wait, and never count it against the job).
//!
//! | error                          | fetch             | manifest / upload   | audit log  | vault    |
//! |--------------------------------|-------------------|---------------------|------------|----------|
//! | S3 unreachable, 5xx, throttled | transient         | transient           | transient  | transient|
//! | local disk (full, unwritable)  | transient         | transient           | transient  | -        |
//! | S3 404 (no such object/bucket) | artifact_missing  | invalid_job         | internal   | -        |
//! | S3 403 and other 4xx           | unauthorized      | unauthorized        | internal   | -        |
//! | KMS refuses (4xx)              | -                 | -                   | -          | key_unavailable |
//! | unknown key                    | -                 | -                   | -          | unknown_key |
//!
//! A 403 is the same answer wherever it comes from: the worker's credentials may not do
//! that, which retrying does not change. It is `unauthorized` where the job chose the
//! location (artifacts, output) and `internal` where the operator did (the audit log).

use crate::event::{ErrorCode, ErrorInfo};
use crate::key::KeyError;
use crate::sign::SignError;
use crate::store::StoreError;
use crate::vault::VaultError;

/// A job's failure, with its disposition.
#[derive(Debug)]
pub enum Failure {
    /// The input is wrong: fail now, dead-letter.
    Permanent(ErrorInfo),
    /// Infrastructure trouble: retry later.
    Transient(String),
    /// Another delivery of the same job is running: try again when it is done.
    Busy(String),
}

/// A permanent failure.
pub fn permanent(code: ErrorCode, message: impl Into<String>, artifact: Option<String>) -> Failure {
    Failure::Permanent(ErrorInfo { code, message: message.into(), artifact })
}

/// The stage that talked to the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading an artifact (the job names it).
    Fetch,
    /// Reading or writing the output location (the job names it).
    Output,
    /// The audit log (the operator names it).
    Audit,
    /// The approvals location (the operator names it).
    Approvals,
}

/// Classifies an object store error of `stage`; `artifact` is the object the job named.
pub fn store(stage: Stage, e: StoreError, artifact: Option<String>) -> Failure {
    let msg = e.to_string();
    match (e, stage) {
        (StoreError::Transient { .. } | StoreError::Local { .. }, _) => Failure::Transient(msg),
        // The job again from the fetch: the input is hashed anew, and a sha256 the job gave
        // decides whether the new input may be signed at all.
        (StoreError::SourceChanged { .. }, _) => Failure::Transient(msg),
        (StoreError::NotFound { bucket, key }, Stage::Fetch) => {
            permanent(ErrorCode::ArtifactMissing, msg, Some(artifact.unwrap_or(format!("s3://{bucket}/{key}"))))
        }
        (StoreError::NotFound { .. }, Stage::Output) => {
            permanent(ErrorCode::InvalidJob, format!("cannot use the output location: {msg} (no such bucket?)"), None)
        }
        (StoreError::TooLarge { .. }, Stage::Fetch) => permanent(ErrorCode::InvalidArtifact, msg, artifact),
        (StoreError::Rejected { .. }, Stage::Fetch) => permanent(ErrorCode::Unauthorized, msg, artifact),
        (StoreError::Rejected { .. }, Stage::Output) => {
            permanent(ErrorCode::Unauthorized, format!("the worker may not use the output location: {msg}"), None)
        }
        (_, Stage::Audit) => permanent(ErrorCode::Internal, format!("audit log: {msg}"), None),
        (_, Stage::Approvals) => permanent(ErrorCode::Internal, format!("approvals location: {msg}"), None),
        (StoreError::TooLarge { .. }, Stage::Output) => permanent(ErrorCode::OutputConflict, msg, None),
        (StoreError::Exists { .. }, _) => permanent(ErrorCode::Internal, msg, None),
    }
}

/// Whether retrying a store call in place may help (the in-delivery backoff).
pub fn store_retryable(e: &StoreError) -> bool {
    e.is_transient()
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::UnknownKey(_) => permanent(ErrorCode::UnknownKey, e.to_string(), None),
            // KMS said no (access denied, key disabled): the same key will be refused again.
            VaultError::KmsDenied { .. } => permanent(ErrorCode::KeyUnavailable, e.to_string(), None),
            // The token said no (wrong PIN, key missing, another key in its place).
            VaultError::SignerRefused { .. } => permanent(ErrorCode::KeyUnavailable, e.to_string(), None),
            VaultError::Revoked { .. } => permanent(ErrorCode::KeyUnavailable, e.to_string(), None),
            VaultError::Key(KeyError::RemoteRefused(_)) => permanent(ErrorCode::KeyUnavailable, e.to_string(), None),
            // Another name holds the key: only `keys import`/adoption says this, not a job.
            VaultError::Duplicate { .. } => permanent(ErrorCode::Internal, e.to_string(), None),
            // A vault that cannot be read or unsealed is the operator's problem, not the job's:
            // retry, and fail as internal if it does not recover within the horizon.
            other => Failure::Transient(other.to_string()),
        }
    }
}

/// Whether retrying a vault call in place may help.
pub fn vault_retryable(e: &VaultError) -> bool {
    matches!(e, VaultError::Unavailable(_) | VaultError::Io { .. })
}

impl From<SignError> for Failure {
    fn from(e: SignError) -> Self {
        match e {
            SignError::InvalidArtifact { artifact, message } => {
                permanent(ErrorCode::InvalidArtifact, format!("{artifact}: {message}"), Some(artifact))
            }
            SignError::Invalid(m) => permanent(ErrorCode::InvalidArtifact, m, None),
            SignError::Conflict(m) => permanent(ErrorCode::OutputConflict, m, None),
            // The work dir (disk full, unwritable): the job is fine, the machine is not.
            SignError::Io(e) => Failure::Transient(format!("staging: {e}")),
            // The token or KMS refused mid-batch (key disabled or deleted since it was checked).
            SignError::Key(KeyError::RemoteRefused(m)) => permanent(ErrorCode::KeyUnavailable, m, None),
            // It kept failing through the signer's own retries: the worker's horizon applies.
            SignError::Key(KeyError::RemoteUnavailable(m)) => Failure::Transient(m),
            other => permanent(ErrorCode::Internal, other.to_string(), None),
        }
    }
}

/// Whether a broker error says an exclusive queue is held by another connection.
pub fn resource_locked(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(f: Failure) -> &'static str {
        match f {
            Failure::Permanent(i) => i.code.as_str(),
            Failure::Transient(_) => "transient",
            Failure::Busy(_) => "busy",
        }
    }

    #[test]
    fn one_answer_per_error_and_stage() {
        let rejected = || StoreError::Rejected { bucket: "b".into(), key: "k".into(), message: "403".into() };
        let missing = || StoreError::NotFound { bucket: "b".into(), key: "k".into() };
        let down = || StoreError::Transient { bucket: "b".into(), key: "k".into(), message: "refused".into() };
        let disk =
            || StoreError::Local { bucket: "b".into(), key: "k".into(), source: std::io::Error::other("ENOSPC") };
        assert_eq!(code(store(Stage::Fetch, rejected(), None)), "unauthorized");
        assert_eq!(code(store(Stage::Output, rejected(), None)), "unauthorized");
        assert_eq!(code(store(Stage::Audit, rejected(), None)), "internal");
        assert_eq!(code(store(Stage::Fetch, missing(), None)), "artifact_missing");
        assert_eq!(code(store(Stage::Output, missing(), None)), "invalid_job");
        for stage in [Stage::Fetch, Stage::Output, Stage::Audit] {
            assert_eq!(code(store(stage, down(), None)), "transient");
            assert_eq!(code(store(stage, disk(), None)), "transient");
        }
        let artifact = SignError::InvalidArtifact { artifact: "s3://b/k".into(), message: "corrupt".into() };
        match Failure::from(artifact) {
            Failure::Permanent(i) => assert_eq!(i.artifact.as_deref(), Some("s3://b/k")),
            other => panic!("{other:?}"),
        }
        assert_eq!(code(Failure::from(SignError::Io(std::io::Error::other("ENOSPC")))), "transient");
    }
}
