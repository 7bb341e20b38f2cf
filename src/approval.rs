//! Release approvals: the pending requests of keys whose policy section sets `approvals`,
//! the approval messages that decide them, and where both are kept.
//!
//! A job for such a key is fetched and hashed, and becomes a [`PendingRequest`] stored under
//! the approvals location (`SIGNET_APPROVALS`, `s3://BUCKET/PREFIX`):
//!
//! ```text
//! PREFIX requests/JOB_ID/request.json          the request: producer, key, every input's digest
//! PREFIX requests/JOB_ID/approvals/USER.json   one per counted approval (written once)
//! PREFIX requests/JOB_ID/closed.json           how it ended: signed, rejected, expired, failed
//! ```
//!
//! Every object is written once (`If-None-Match: *`) and never changed, so a worker that
//! dies anywhere leaves a state the next one reads and continues from. Approvers send an
//! [`ApprovalMessage`] to the queue `NS.approvals`; the broker checks its `user_id`, and a
//! worker counts it only if that user is an approver of the key, is not the producer, has
//! not approved already, and names exactly the request's key fingerprint and digests
//! (`worker::approval`).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::event::ErrorCode;
use crate::job::{ArtifactSpec, BucketName, Job, JobId, ObjectKey, OutputSpec, Sha256Hex};
use crate::policy::ApprovalRule;
use crate::sign::Format;
use crate::store::{ObjectStore, StoreError};
use crate::vault::KeyName;

/// `request_version` of the requests this build writes.
pub const REQUEST_VERSION: u32 = 1;
/// Largest request object read back (a request of 1000 artifacts is about 400 KiB).
const OBJECT_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest approval message.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Longest rejection reason.
pub const MAX_REASON_CHARS: usize = 1000;

/// One input of a pending request, with the digest that approvers approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingArtifact {
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub sha256: Sha256Hex,
    pub size: u64,
    /// The format the job asked for (`auto` stays `auto`: it is resolved when signing).
    pub format: Format,
}

impl PendingArtifact {
    /// `s3://bucket/key`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// A job waiting for approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRequest {
    pub request_version: u32,
    pub job_id: JobId,
    pub key: KeyName,
    /// The key that will sign (the key name's active key when the request was made).
    pub key_fingerprint: String,
    /// The job's broker-verified `user_id`.
    pub producer: String,
    pub artifacts: Vec<PendingArtifact>,
    pub output: OutputSpec,
    /// The policy's approvers and number of approvals when the request was made.
    pub approvers: Vec<String>,
    pub approvals_required: usize,
    /// RFC 3339, UTC.
    pub requested_at: String,
    pub expires_at: String,
    /// The worker that stored it.
    pub worker: String,
    /// The job's `replace_signatures`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_signatures: bool,
}

impl PendingRequest {
    /// The request for `job`, whose inputs hashed to `digests` (in artifact order).
    pub fn new(
        job: &Job,
        producer: &str,
        key_fingerprint: String,
        digests: Vec<(Sha256Hex, u64)>,
        rule: &ApprovalRule,
        worker: &str,
        now: SystemTime,
    ) -> Self {
        let artifacts = job
            .artifacts
            .iter()
            .zip(digests)
            .map(|(a, (sha256, size))| PendingArtifact {
                bucket: a.bucket.clone(),
                key: a.key.clone(),
                sha256,
                size,
                format: a.format,
            })
            .collect();
        PendingRequest {
            request_version: REQUEST_VERSION,
            job_id: job.job_id.clone(),
            key: job.key.clone(),
            key_fingerprint,
            producer: producer.to_owned(),
            artifacts,
            output: job.output.clone(),
            approvers: rule.approvers.clone(),
            approvals_required: rule.approvals,
            requested_at: rfc3339(now),
            expires_at: rfc3339(now + rule.ttl),
            worker: worker.to_owned(),
            replace_signatures: job.replace_signatures,
        }
    }

    /// When it expires; `None` if the stored time does not parse (treated as expired).
    pub fn expires(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.expires_at).ok()
    }

    /// How long until it expires (zero once it has).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires().and_then(|t| t.duration_since(now).ok()).unwrap_or(Duration::ZERO)
    }

    /// The rule it was made under (used if the policy no longer has one for its key).
    pub fn rule(&self) -> ApprovalRule {
        let ttl = humantime::parse_rfc3339(&self.requested_at)
            .ok()
            .and_then(|r| self.expires().and_then(|e| e.duration_since(r).ok()))
            .unwrap_or_default();
        ApprovalRule { approvers: self.approvers.clone(), approvals: self.approvals_required, ttl }
    }

    /// What an approval of this request must name.
    pub fn digests(&self) -> Vec<ApprovedArtifact> {
        self.artifacts.iter().map(|a| ApprovedArtifact { source: a.uri(), sha256: a.sha256.clone() }).collect()
    }

    /// The job that signs it: the same job, every input pinned to its approved digest, so
    /// an object replaced after approval fails as `checksum_mismatch`.
    pub fn job(&self) -> Job {
        Job {
            job_id: self.job_id.clone(),
            key: self.key.clone(),
            artifacts: self
                .artifacts
                .iter()
                .map(|a| ArtifactSpec {
                    bucket: a.bucket.clone(),
                    key: a.key.clone(),
                    sha256: Some(a.sha256.clone()),
                    format: a.format,
                })
                .collect(),
            output: self.output.clone(),
            replace_signatures: self.replace_signatures,
        }
    }

    /// Whether `job` from `producer` (a redelivery, or the same job submitted again) asks
    /// for what this request holds.
    pub fn same_job(&self, job: &Job, producer: &str) -> bool {
        self.producer == producer
            && self.key == job.key
            && self.output == job.output
            && self.artifacts.len() == job.artifacts.len()
            && self.artifacts.iter().zip(&job.artifacts).all(|(p, a)| {
                p.bucket == a.bucket
                    && p.key == a.key
                    && p.format == a.format
                    && a.sha256.as_ref().is_none_or(|s| *s == p.sha256)
            })
    }
}

/// An input as an approval names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovedArtifact {
    /// `s3://bucket/key`.
    pub source: String,
    pub sha256: Sha256Hex,
}

/// What an approval message asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Count the sender's approval of the named digests.
    Approve,
    /// Refuse the request (`reason` required): nothing is signed.
    Reject,
    /// A timer: expire the request if its time has come (sent by workers to themselves).
    Expire,
}

/// A message on `NS.approvals` (contract §10, `schemas/approval.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalMessage {
    pub decision: Decision,
    pub job_id: JobId,
    /// `approve`: the fingerprint of the key the approver was shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// `approve`: every input with the digest the approver was shown, in request order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<ApprovedArtifact>>,
    /// `reject`: why (shown to the producer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ApprovalMessage {
    /// The approval of everything `req` holds.
    pub fn approve(req: &PendingRequest) -> Self {
        ApprovalMessage {
            decision: Decision::Approve,
            job_id: req.job_id.clone(),
            key_fingerprint: Some(req.key_fingerprint.clone()),
            artifacts: Some(req.digests()),
            reason: None,
        }
    }

    /// A rejection of job `job_id`.
    pub fn reject(job_id: JobId, reason: String) -> Self {
        ApprovalMessage {
            decision: Decision::Reject,
            job_id,
            key_fingerprint: None,
            artifacts: None,
            reason: Some(reason),
        }
    }

    /// The expiry timer of job `job_id`.
    pub fn expire(job_id: JobId) -> Self {
        ApprovalMessage { decision: Decision::Expire, job_id, key_fingerprint: None, artifacts: None, reason: None }
    }

    /// Parses and checks a message body: each decision carries exactly its members.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(format!("message is {} bytes; the limit is {MAX_MESSAGE_BYTES}", body.len()));
        }
        let m: ApprovalMessage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let (fpr, arts, reason) = (m.key_fingerprint.is_some(), m.artifacts.is_some(), m.reason.is_some());
        match m.decision {
            Decision::Approve if !(fpr && arts) || reason => {
                Err("an approval names key_fingerprint and artifacts (and no reason)".into())
            }
            Decision::Reject if fpr || arts || !reason => Err("a rejection gives a reason (and nothing else)".into()),
            Decision::Reject
                if m.reason.as_deref().is_some_and(|r| r.trim().is_empty() || r.chars().count() > MAX_REASON_CHARS) =>
            {
                Err(format!("the reason must be 1 to {MAX_REASON_CHARS} characters"))
            }
            Decision::Expire if fpr || arts || reason => Err("an expiry timer names only the job".into()),
            _ => Ok(m),
        }
    }
}

/// A counted approval, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRecord {
    pub approver: String,
    pub time: String,
    pub key_fingerprint: String,
    pub artifacts: Vec<ApprovedArtifact>,
    pub worker: String,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Signed,
    Rejected,
    Expired,
    /// Signing after approval failed for good (e.g. an input replaced: `checksum_mismatch`).
    Failed,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Signed => "signed",
            Resolution::Rejected => "rejected",
            Resolution::Expired => "expired",
            Resolution::Failed => "failed",
        }
    }
}

/// The end of a request, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closed {
    pub resolution: Resolution,
    pub time: String,
    /// The approver who rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The error code and message the job failed with (rejected, expired, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The approvers it was signed on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<String>,
    pub worker: String,
}

/// A request and what has happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestState {
    pub request: PendingRequest,
    pub approvals: Vec<ApprovalRecord>,
    pub closed: Option<Closed>,
}

impl RequestState {
    /// The approvers whose approvals count under `rule`: still listed, never the producer,
    /// naming the request's key and digests.
    pub fn counted(&self, rule: &ApprovalRule) -> Vec<String> {
        let digests = self.request.digests();
        let mut who: Vec<String> = self
            .approvals
            .iter()
            .filter(|a| {
                rule.approvers.contains(&a.approver)
                    && a.approver != self.request.producer
                    && a.key_fingerprint == self.request.key_fingerprint
                    && a.artifacts == digests
            })
            .map(|a| a.approver.clone())
            .collect();
        who.sort();
        who.dedup();
        who
    }
}

/// Where requests are kept: `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requests {
    bucket: String,
    prefix: String,
}

impl Requests {
    /// The location `s3://bucket/prefix` (the prefix gets a trailing `/`).
    pub fn new(uri: &str) -> Result<Self, String> {
        let (bucket, prefix) =
            crate::audit::parse_location(uri).map_err(|e| e.replace("audit log", "approvals location"))?;
        Ok(Requests { bucket, prefix })
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn dir(&self, job_id: &str) -> String {
        format!("{}requests/{job_id}/", self.prefix)
    }

    async fn read<S: ObjectStore, T: serde::de::DeserializeOwned>(
        &self,
        store: &S,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = store.get_small(&self.bucket, key, OBJECT_LIMIT).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Rejected {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message: format!("not a signet approvals object: {e}"),
        })
    }

    /// Writes `value` at `key` unless something is there; `false` if it was.
    async fn put_once<S: ObjectStore, T: Serialize>(
        &self,
        store: &S,
        key: &str,
        value: &T,
    ) -> Result<bool, StoreError> {
        let mut body = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Local {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            source: e.into(),
        })?;
        body.push(b'\n');
        match store.put_bytes(&self.bucket, key, body, "application/json", true).await {
            Ok(()) => Ok(true),
            Err(StoreError::Exists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The request of `job_id` with its approvals and end, if there is one.
    pub async fn state<S: ObjectStore>(&self, store: &S, job_id: &str) -> Result<Option<RequestState>, StoreError> {
        let dir = self.dir(job_id);
        let Some(request) = self.read::<S, PendingRequest>(store, &format!("{dir}request.json")).await? else {
            return Ok(None);
        };
        let mut approvals = Vec::new();
        let approvals_dir = format!("{dir}approvals/");
        for key in store.list_keys(&self.bucket, &approvals_dir).await? {
            if let Some(a) = self.read::<S, ApprovalRecord>(store, &key).await?
                && key == format!("{approvals_dir}{}.json", a.approver)
            {
                approvals.push(a);
            }
        }
        let closed = self.read(store, &format!("{dir}closed.json")).await?;
        Ok(Some(RequestState { request, approvals, closed }))
    }

    /// Stores a new request; `false` if one is there already.
    pub async fn create<S: ObjectStore>(&self, store: &S, req: &PendingRequest) -> Result<bool, StoreError> {
        self.put_once(store, &format!("{}request.json", self.dir(req.job_id.as_str())), req).await
    }

    /// Stores an approval; `false` if this approver has one already.
    pub async fn add_approval<S: ObjectStore>(
        &self,
        store: &S,
        job_id: &str,
        rec: &ApprovalRecord,
    ) -> Result<bool, StoreError> {
        self.put_once(store, &format!("{}approvals/{}.json", self.dir(job_id), rec.approver), rec).await
    }

    /// Closes a request; `false` if it was closed already (the first end stands).
    pub async fn close<S: ObjectStore>(&self, store: &S, job_id: &str, closed: &Closed) -> Result<bool, StoreError> {
        self.put_once(store, &format!("{}closed.json", self.dir(job_id)), closed).await
    }

    /// Every request that has not ended, oldest first.
    pub async fn open<S: ObjectStore>(&self, store: &S) -> Result<Vec<RequestState>, StoreError> {
        let root = format!("{}requests/", self.prefix);
        let keys = store.list_keys(&self.bucket, &root).await?;
        let closed: std::collections::HashSet<&str> =
            keys.iter().filter_map(|k| k.strip_suffix("/closed.json")).collect();
        let mut out = Vec::new();
        for k in &keys {
            let Some(dir) = k.strip_suffix("/request.json") else { continue };
            if closed.contains(dir) {
                continue;
            }
            let job_id = &dir[root.len()..];
            if let Some(s) = self.state(store, job_id).await?
                && s.closed.is_none()
            {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.request.requested_at.cmp(&b.request.requested_at));
        Ok(out)
    }
}

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A fingerprint in the groups yum and gpg show (`F2EE 2A0E 76A6 D469 8AE5  301A 7420 C142
/// 9B92 0A5E`), for a person to compare over another channel.
pub fn grouped_fingerprint(fpr: &str) -> String {
    let fpr = fpr.to_ascii_uppercase();
    let groups: Vec<&str> = fpr.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    let half = groups.len() / 2;
    if groups.len() == 10 {
        format!("{}  {}", groups[..half].join(" "), groups[half..].join(" "))
    } else {
        groups.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PendingRequest {
        let job = Job::parse(
            br#"{"job_id":"rel-1","key":"release","artifacts":[{"bucket":"incoming","key":"a.rpm"}],
                "output":{"bucket":"signed","prefix":"r/"}}"#,
        )
        .unwrap();
        let rule =
            ApprovalRule { approvers: vec!["alice".into(), "bob".into()], approvals: 2, ttl: Duration::from_secs(60) };
        let sha: Sha256Hex = "ab".repeat(32).parse().unwrap();
        PendingRequest::new(
            &job,
            "ci",
            "F2EE2A0E76A6D4698AE5301A7420C1429B920A5E".into(),
            vec![(sha, 3)],
            &rule,
            "w",
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn messages_carry_exactly_what_their_decision_needs() {
        let req = request();
        let ok = serde_json::to_vec(&ApprovalMessage::approve(&req)).unwrap();
        assert_eq!(ApprovalMessage::parse(&ok).unwrap().artifacts.unwrap(), req.digests());
        for bad in [
            r#"{"decision":"approve","job_id":"rel-1"}"#,
            r#"{"decision":"approve","job_id":"rel-1","key_fingerprint":"X","artifacts":[],"reason":"r"}"#,
            r#"{"decision":"reject","job_id":"rel-1"}"#,
            r#"{"decision":"reject","job_id":"rel-1","reason":"  "}"#,
            r#"{"decision":"expire","job_id":"rel-1","reason":"r"}"#,
            r#"{"decision":"maybe","job_id":"rel-1"}"#,
            r#"{"decision":"expire","job_id":"../x"}"#,
            r#"{"decision":"expire","job_id":"rel-1","extra":1}"#,
            "not json",
        ] {
            assert!(ApprovalMessage::parse(bad.as_bytes()).is_err(), "accepted {bad}");
        }
        assert!(ApprovalMessage::parse(br#"{"decision":"reject","job_id":"rel-1","reason":"untested"}"#).is_ok());
    }

    #[test]
    fn only_matching_approvals_by_listed_approvers_count() {
        let req = request();
        let approval = |who: &str, digests: Vec<ApprovedArtifact>| ApprovalRecord {
            approver: who.into(),
            time: String::new(),
            key_fingerprint: req.key_fingerprint.clone(),
            artifacts: digests,
            worker: "w".into(),
        };
        let other =
            vec![ApprovedArtifact { source: "s3://incoming/a.rpm".into(), sha256: "cd".repeat(32).parse().unwrap() }];
        let state = RequestState {
            request: req.clone(),
            approvals: vec![
                approval("alice", req.digests()),
                approval("bob", other),
                approval("ci", req.digests()),
                approval("mallory", req.digests()),
            ],
            closed: None,
        };
        let mut rule = req.rule();
        assert_eq!(rule.ttl, Duration::from_secs(60));
        rule.approvers.push("ci".into());
        assert_eq!(state.counted(&rule), vec!["alice".to_owned()]);
    }

    #[test]
    fn the_signing_job_pins_the_approved_digests() {
        let req = request();
        let job = req.job();
        assert_eq!(job.artifacts[0].sha256.as_ref(), Some(&req.artifacts[0].sha256));
        assert!(req.same_job(&job, "ci"));
        assert!(!req.same_job(&job, "someone-else"));
        let mut moved = job.clone();
        moved.output.prefix = "elsewhere/".parse().unwrap();
        assert!(!req.same_job(&moved, "ci"));
        assert!(req.remaining(SystemTime::UNIX_EPOCH + Duration::from_secs(59)) > Duration::ZERO);
        assert_eq!(req.remaining(SystemTime::UNIX_EPOCH + Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn fingerprints_are_grouped_as_yum_shows_them() {
        assert_eq!(
            grouped_fingerprint("f2ee2a0e76a6d4698ae5301a7420c1429b920a5e"),
            "F2EE 2A0E 76A6 D469 8AE5  301A 7420 C142 9B92 0A5E"
        );
    }
}
