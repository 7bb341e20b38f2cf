//! Completion events: CloudEvents 1.0 in structured mode (contract v1).

use serde::{Deserialize, Serialize};

use crate::sign::Format;

/// `type` of a succeeded job.
pub const SUCCEEDED: &str = "signet.job.succeeded";
/// `type` of a failed job.
pub const FAILED: &str = "signet.job.failed";
/// `type` of a job waiting for approvals (sent when the request is stored, and again after
/// each approval that is counted).
pub const PENDING: &str = "signet.job.pending";
/// `type` of the answer to an approval or rejection that was not counted.
pub const APPROVAL_REFUSED: &str = "signet.approval.refused";
/// Routing keys on the events exchange.
pub const RK_SUCCEEDED: &str = "job.succeeded";
pub const RK_FAILED: &str = "job.failed";
pub const RK_PENDING: &str = "job.pending";
pub const RK_APPROVAL_REFUSED: &str = "approval.refused";
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
    /// An approver rejected the pending request.
    ApprovalRejected,
    /// The pending request was not approved within its `approval_ttl`.
    ApprovalExpired,
    /// (`approval.refused` only) an approval message that is malformed, names no open
    /// request, or names other digests or another key than the request.
    InvalidApproval,
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
            ErrorCode::ApprovalRejected => "approval_rejected",
            ErrorCode::ApprovalExpired => "approval_expired",
            ErrorCode::InvalidApproval => "invalid_approval",
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
    /// The approvers counted so far (pending) or whose approvals the signature was made on
    /// (succeeded); empty for keys without approvals.
    #[serde(default)]
    pub approvals: Vec<String>,
    /// The pending request (`job.pending` only).
    #[serde(default)]
    pub request: Option<crate::approval::PendingRequest>,
    /// The broker user whose approval or rejection is refused (`approval.refused` only).
    #[serde(default)]
    pub approver: Option<String>,
}

impl EventData {
    /// Data with only the job id (and key) set.
    pub fn for_job(job_id: &str, key: Option<String>) -> Self {
        EventData {
            job_id: job_id.into(),
            key,
            key_fingerprint: None,
            outputs: Vec::new(),
            sha256sums: None,
            manifest: None,
            error: None,
            approvals: Vec::new(),
            request: None,
            approver: None,
        }
    }
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
    /// Wraps `data` in an envelope from `source` (e.g. `signet/worker/HOST`): succeeded, or
    /// failed if `data.error` is set.
    pub fn new(source: &str, data: EventData) -> Event {
        let kind = if data.error.is_some() { FAILED } else { SUCCEEDED };
        Event::of_kind(source, kind, data)
    }

    /// A `job.pending` event carrying `request` and the approvals counted so far.
    pub fn pending(source: &str, request: crate::approval::PendingRequest, approvals: Vec<String>) -> Event {
        let mut data = EventData::for_job(request.job_id.as_str(), Some(request.key.to_string()));
        data.key_fingerprint = Some(request.key_fingerprint.clone());
        data.approvals = approvals;
        data.request = Some(request);
        Event::of_kind(source, PENDING, data)
    }

    /// The answer to an approval message that was not counted.
    pub fn approval_refused(
        source: &str,
        job_id: &str,
        key: Option<String>,
        approver: Option<String>,
        error: ErrorInfo,
    ) -> Event {
        let mut data = EventData::for_job(job_id, key);
        data.approver = approver;
        data.error = Some(error);
        Event::of_kind(source, APPROVAL_REFUSED, data)
    }

    fn of_kind(source: &str, kind: &str, data: EventData) -> Event {
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
        let mut data = EventData::for_job(job_id, key);
        data.error = Some(error);
        Event::new(source, data)
    }

    /// Whether this reports success.
    pub fn succeeded(&self) -> bool {
        self.kind == SUCCEEDED && self.data.error.is_none()
    }

    /// Whether this says the job waits for approvals (not its end).
    pub fn is_pending(&self) -> bool {
        self.kind == PENDING
    }

    /// The routing key it is published with.
    pub fn routing_key(&self) -> &'static str {
        match self.kind.as_str() {
            SUCCEEDED => RK_SUCCEEDED,
            PENDING => RK_PENDING,
            APPROVAL_REFUSED => RK_APPROVAL_REFUSED,
            _ => RK_FAILED,
        }
    }
}

fn parse_uri(uri: &str) -> ObjectRef {
    let rest = uri.strip_prefix("s3://").unwrap_or(uri);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    ObjectRef { bucket: bucket.into(), key: key.into() }
}

/// The succeeded event for a committed manifest (`approvals` from its manifest).
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
    let mut data = EventData::for_job(&m.job_id, Some(m.key.name.clone()));
    data.key_fingerprint = Some(m.key.fingerprint.clone());
    data.outputs = outputs;
    data.sha256sums = Some(ObjectRef { bucket: out.bucket.to_string(), key: out.key(crate::sign::SHA256SUMS) });
    data.manifest = Some(ObjectRef { bucket: out.bucket.to_string(), key: out.key(crate::sign::MANIFEST) });
    data.approvals = m.approvals.clone();
    Event::new(source, data)
}
