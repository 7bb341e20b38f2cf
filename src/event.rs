//! Completion events: CloudEvents 1.0 in structured mode (contract v1).

use serde::{Deserialize, Serialize};

use crate::sign::Format;

/// `type` of a succeeded job.
pub const SUCCEEDED: &str = "signet.job.succeeded";
/// `type` of a failed job.
pub const FAILED: &str = "signet.job.failed";
/// Routing keys on the events exchange.
pub const RK_SUCCEEDED: &str = "job.succeeded";
pub const RK_FAILED: &str = "job.failed";
/// AMQP content type of an event.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Failure codes, stable parts of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJob,
    Unauthorized,
    UnknownKey,
    KeyUnavailable,
    ArtifactMissing,
    ChecksumMismatch,
    InvalidArtifact,
    OutputConflict,
    JobConflict,
    Internal,
}

impl ErrorCode {
    /// The code as it appears in events.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJob => "invalid_job",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownKey => "unknown_key",
            ErrorCode::KeyUnavailable => "key_unavailable",
            ErrorCode::ArtifactMissing => "artifact_missing",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::InvalidArtifact => "invalid_artifact",
            ErrorCode::OutputConflict => "output_conflict",
            ErrorCode::JobConflict => "job_conflict",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An object location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
}

/// One written output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    pub bucket: String,
    pub key: String,
    pub sha256: String,
    pub size: u64,
    pub format: Format,
    pub source: ObjectRef,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
}

/// The event's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub job_id: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_fingerprint: Option<String>,
    #[serde(default)]
    pub outputs: Vec<OutputRef>,
    #[serde(default)]
    pub sha256sums: Option<ObjectRef>,
    #[serde(default)]
    pub manifest: Option<ObjectRef>,
    pub error: Option<ErrorInfo>,
}

/// A CloudEvents 1.0 envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub time: String,
    pub datacontenttype: String,
    pub data: EventData,
}

impl Event {
    /// Wraps `data` in an envelope from `source` (e.g. `signet/worker/HOST`).
    pub fn new(source: &str, data: EventData) -> Event {
        let kind = if data.error.is_some() { FAILED } else { SUCCEEDED };
        Event {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            kind: kind.into(),
            subject: data.job_id.clone(),
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            datacontenttype: "application/json".into(),
            data,
        }
    }

    /// A failure event.
    pub fn failed(source: &str, job_id: &str, key: Option<String>, error: ErrorInfo) -> Event {
        Event::new(
            source,
            EventData {
                job_id: job_id.into(),
                key,
                key_fingerprint: None,
                outputs: Vec::new(),
                sha256sums: None,
                manifest: None,
                error: Some(error),
            },
        )
    }

    /// Whether this reports success.
    pub fn succeeded(&self) -> bool {
        self.kind == SUCCEEDED && self.data.error.is_none()
    }

    /// The routing key it is published with.
    pub fn routing_key(&self) -> &'static str {
        if self.succeeded() { RK_SUCCEEDED } else { RK_FAILED }
    }
}

fn parse_uri(uri: &str) -> ObjectRef {
    let rest = uri.strip_prefix("s3://").unwrap_or(uri);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    ObjectRef { bucket: bucket.into(), key: key.into() }
}

/// The succeeded event for a committed manifest.
pub fn from_manifest(source: &str, m: &crate::sign::manifest::Manifest, out: &crate::job::OutputSpec) -> Event {
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
            sha256sums: Some(ObjectRef { bucket: out.bucket.to_string(), key: out.key(crate::sign::SHA256SUMS) }),
            manifest: Some(ObjectRef { bucket: out.bucket.to_string(), key: out.key(crate::sign::MANIFEST) }),
            error: None,
        },
    )
}
