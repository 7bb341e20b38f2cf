//! The audit trail: one JSON record per signature made and per job denied, in hash chains
//! in S3, one chain per worker process, so that workers never race each other to append.
//!
//! Layout under the log's `PREFIX` (format 2, since issue 9; see `docs/audit.md`):
//! - `chains/CHAIN/NNNNNNNNNNNNNNNNNNNN.json`: the records of one worker process, numbered
//!   from 1. `CHAIN` is named when the process first appends (`20261201T120000Z-1a2b3c4d`:
//!   the time, then 8 random hex digits) and only that process writes it, so an append is
//!   one PUT with no lookup and no lost race.
//! - `index/NNNNNNNNNNNNNNNNNNNN.json`: one chain shared by all workers, with one record when
//!   a chain is opened (before its first record) and one when its worker closes it on a
//!   clean exit (its record count and head). Workers meet here only when they start or stop.
//! - `NNNNNNNNNNNNNNNNNNNN.json` directly under `PREFIX`: the single chain of format 1, which
//!   workers no longer append to. Its head is anchored in the first index record.
//!
//! Every record carries `seq` and `prev_sha256`, the SHA-256 of the exact bytes of the one
//! before it, and is written with `If-None-Match: *`. Editing, replacing, removing or
//! reordering a record breaks its chain at a point `signet audit verify` names; a chain the
//! index does not list, or one that does not match what its close record says, is named
//! too. Every record is also written to the structured log (target `signet::audit`) with its
//! SHA-256, a copy outside the bucket that anchors each chain's newest records.

mod chain;
mod verify;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::store::{ObjectStore, StoreError};
use chain::Chain;
pub use chain::{ChainSummary, GENESIS};
pub use verify::{ChainEnd, ChainReport, LogSummary, verify_chain, verify_log};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Signatures were made (and are about to be written).
    Signed,
    /// The policy refused the job.
    Denied,
    /// The key needs approvals: the job's inputs were fetched, hashed and stored as a
    /// pending request (`artifacts` holds the digests to be approved).
    ApprovalRequested,
    /// `approver` approved the request's digests.
    Approved,
    /// `approver` rejected the request (`reason` says why); nothing will be signed.
    Rejected,
    /// The request was not approved within its key's `approval_ttl`.
    Expired,
    /// An approval or rejection that was not counted (`approver` if the message had a
    /// user, `reason` says why): not an approver, the producer, other digests, twice.
    ApprovalRefused,
}

/// An input as the record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditArtifact {
    /// `s3://bucket/key`.
    pub source: String,
    /// SHA-256 of what was signed (for a denied job: what the job claimed, if anything).
    pub sha256: Option<String>,
}

/// An output as the record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOutput {
    /// `s3://bucket/key`.
    pub object: String,
    pub sha256: String,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    pub prev_sha256: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The worker that wrote it (its CloudEvents source).
    pub worker: String,
    pub outcome: Outcome,
    pub job_id: String,
    /// The AMQP user_id of the job message (verified by the broker), if it had one.
    pub producer: Option<String>,
    pub key: String,
    pub key_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The broker user who approved, rejected or sent a refused approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// For `signed`: the approvers whose approvals the signature was made on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    pub artifacts: Vec<AuditArtifact>,
    pub outputs: Vec<AuditOutput>,
}

impl AuditRecord {
    /// A record to append (its `seq` and `prev_sha256` are set by [`AuditLog::append`]).
    pub fn new(worker: &str, outcome: Outcome, job_id: &str, producer: Option<&str>, key: &str) -> Self {
        AuditRecord {
            seq: 0,
            prev_sha256: String::new(),
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            worker: worker.to_owned(),
            outcome,
            job_id: job_id.to_owned(),
            producer: producer.map(str::to_owned),
            key: key.to_owned(),
            key_fingerprint: None,
            reason: None,
            approver: None,
            approvers: Vec::new(),
            artifacts: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

/// What an index record says of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexEvent {
    /// The chain is about to get its first record.
    Opened,
    /// Its worker stopped cleanly: the chain ends with `records` records, `head_sha256` last.
    Closed,
}

/// The head of a chain at some moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    pub records: u64,
    pub head_sha256: String,
}

/// One record of the index chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRecord {
    pub seq: u64,
    pub prev_sha256: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The worker that wrote it (its CloudEvents source).
    pub worker: String,
    pub event: IndexEvent,
    /// The chain's name (`chains/CHAIN/`).
    pub chain: String,
    /// With `closed`: how the chain ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<ChainHead>,
    /// In index record 1 only: the head of the format-1 chain when the index began, if
    /// there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<ChainHead>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A new chain name: the UTC time to the second, then 8 random hex digits.
fn chain_name() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{:08x}", rand::random::<u32>())
}

/// The appending end of an audit log: this process's own chain, opened in the index on
/// first use.
#[derive(Debug)]
pub struct AuditLog {
    bucket: String,
    prefix: String,
    worker: String,
    index: Chain,
    legacy: Chain,
    name: String,
    own: Chain,
    /// Whether the index lists `own` yet.
    opened: tokio::sync::Mutex<bool>,
}

/// A record as appended.
#[derive(Debug, Clone)]
pub struct AppendedRecord {
    pub record: AuditRecord,
    pub sha256: String,
    /// `s3://bucket/key`.
    pub object: String,
}

impl AuditLog {
    /// The log at `s3://bucket/prefix`, to be appended to by `worker` (its CloudEvents source).
    pub fn new(uri: &str, worker: &str) -> Result<Self, String> {
        let (bucket, prefix) = parse_location(uri)?;
        let name = chain_name();
        Ok(AuditLog {
            index: Chain::existing(&bucket, format!("{prefix}index/")),
            legacy: Chain::existing(&bucket, prefix.clone()),
            own: Chain::new_empty(&bucket, format!("{prefix}chains/{name}/")),
            name,
            bucket,
            prefix,
            worker: worker.to_owned(),
            opened: tokio::sync::Mutex::new(false),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// This process's chain (`chains/NAME/`).
    pub fn chain(&self) -> &str {
        &self.name
    }

    /// Appends an index record for this process's chain.
    async fn index_append<S: ObjectStore>(
        &self,
        store: &S,
        event: IndexEvent,
        closed_at: Option<ChainHead>,
    ) -> Result<(), StoreError> {
        // Other workers append here too (in turns, under the broker's index lock): start
        // from the newest record, not from what this process saw last. If an earlier try
        // of this very append landed without an answer, it is among those records: done.
        for bytes in self.index.refresh(store).await? {
            if let Ok(r) = serde_json::from_slice::<IndexRecord>(&bytes)
                && r.chain == self.name
                && r.event == event
            {
                return Ok(());
            }
        }
        // Index record 1 anchors the format-1 chain as it was when the index began.
        let legacy = match self.index.head(store).await?.0 {
            0 => match self.legacy.find_head(store).await? {
                (0, _) => None,
                (records, head_sha256) => Some(ChainHead { records, head_sha256 }),
            },
            _ => None,
        };
        let mut record = IndexRecord {
            seq: 0,
            prev_sha256: String::new(),
            time: now(),
            worker: self.worker.clone(),
            event,
            chain: self.name.clone(),
            closed_at,
            legacy: None,
        };
        let a = self
            .index
            .append(store, |seq, prev| {
                record.seq = seq;
                record.prev_sha256 = prev.to_owned();
                record.legacy = if seq == 1 { legacy.clone() } else { None };
                serde_json::to_vec(&record).map_err(|e| format!("cannot serialize the index record: {e}"))
            })
            .await?;
        info!(
            target: "signet::audit",
            index_seq = a.seq,
            sha256 = %a.sha256,
            object = %format!("s3://{}/{}", self.bucket, a.key),
            record = %String::from_utf8_lossy(&a.bytes),
            "audit index record appended"
        );
        Ok(())
    }

    /// Whether this process's chain is listed in the index yet.
    pub async fn is_open(&self) -> bool {
        *self.opened.lock().await
    }

    /// Lists this process's chain in the index (once; [`append`](Self::append) does it
    /// if not done before).
    pub async fn open<S: ObjectStore>(&self, store: &S) -> Result<(), StoreError> {
        let mut opened = self.opened.lock().await;
        if !*opened {
            self.index_append(store, IndexEvent::Opened, None).await?;
            *opened = true;
        }
        Ok(())
    }

    /// Appends `record` to this process's chain (opening it in the index first); returns it
    /// as written and its SHA-256.
    pub async fn append<S: ObjectStore>(
        &self,
        store: &S,
        mut record: AuditRecord,
    ) -> Result<AppendedRecord, StoreError> {
        self.open(store).await?;
        let a = self
            .own
            .append(store, |seq, prev| {
                record.seq = seq;
                record.prev_sha256 = prev.to_owned();
                serde_json::to_vec(&record).map_err(|e| format!("cannot serialize the audit record: {e}"))
            })
            .await?;
        let object = format!("s3://{}/{}", self.bucket, a.key);
        info!(
            target: "signet::audit",
            chain = %self.name,
            seq = a.seq,
            sha256 = %a.sha256,
            object = %object,
            record = %String::from_utf8_lossy(&a.bytes),
            "audit record appended"
        );
        Ok(AppendedRecord { record, sha256: a.sha256, object })
    }

    /// Closes this process's chain in the index, if it has records: from then on `audit
    /// verify` knows exactly how it ends. Call once no append can follow.
    pub async fn close<S: ObjectStore>(&self, store: &S) -> Result<(), StoreError> {
        if !*self.opened.lock().await {
            return Ok(());
        }
        // A last append whose answer was lost may have landed: look past the head first.
        self.own.refresh(store).await?;
        let (records, head_sha256) = self.own.head(store).await?;
        self.index_append(store, IndexEvent::Closed, Some(ChainHead { records, head_sha256 })).await
    }

    /// Reads the whole log (for `signet audit verify`): (key, bytes) in key order.
    pub async fn read_all(&self, store: &crate::store::s3::S3Store) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for key in store.list_keys(&self.bucket, &self.prefix).await? {
            let bytes = store.get_small(&self.bucket, &key, chain::RECORD_LIMIT).await?.unwrap_or_default();
            out.push((key, bytes));
        }
        Ok(out)
    }

    /// The log's prefix inside its bucket (empty or ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Splits `s3://BUCKET/PREFIX` (the prefix gets a trailing `/`).
pub fn parse_location(uri: &str) -> Result<(String, String), String> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| format!("audit log {uri:?} must be s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("audit log {uri:?} has no bucket"));
    }
    let prefix = match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    Ok((bucket.to_owned(), prefix))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::Fetched;

    /// An object store in memory whose next `lose` PUTs land but answer with an error, as
    /// when a connection drops after S3 stored the object.
    #[derive(Default)]
    struct LossyStore {
        objects: Mutex<BTreeMap<String, Vec<u8>>>,
        lose: AtomicUsize,
    }

    impl LossyStore {
        fn all(&self) -> Vec<(String, Vec<u8>)> {
            self.objects.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
    }

    fn refused(bucket: &str, key: &str) -> StoreError {
        StoreError::Rejected { bucket: bucket.into(), key: key.into(), message: "not in this test".into() }
    }

    impl ObjectStore for LossyStore {
        async fn get_to_file(&self, bucket: &str, key: &str, _: &Path, _: u64) -> Result<Fetched, StoreError> {
            Err(refused(bucket, key))
        }
        async fn get_small(&self, _: &str, key: &str, _: u64) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.objects.lock().unwrap().get(key).cloned())
        }
        async fn put_file(&self, bucket: &str, key: &str, _: &Path, _: &str, _: bool) -> Result<(), StoreError> {
            Err(refused(bucket, key))
        }
        async fn put_file_copying_tail(
            &self,
            bucket: &str,
            key: &str,
            _: &Path,
            _: &str,
            _: &crate::store::CopyTail,
        ) -> Result<crate::store::Reused, StoreError> {
            Err(refused(bucket, key))
        }
        async fn put_bytes(
            &self,
            bucket: &str,
            key: &str,
            bytes: Vec<u8>,
            _: &str,
            if_absent: bool,
        ) -> Result<(), StoreError> {
            let mut objects = self.objects.lock().unwrap();
            if if_absent && objects.contains_key(key) {
                return Err(StoreError::Exists { bucket: bucket.into(), key: key.into() });
            }
            objects.insert(key.to_owned(), bytes);
            if self.lose.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(StoreError::Transient { bucket: bucket.into(), key: key.into(), message: "lost".into() });
            }
            Ok(())
        }
        async fn list_keys(&self, _: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
            Ok(self.objects.lock().unwrap().keys().filter(|k| k.starts_with(prefix)).cloned().collect())
        }
    }

    fn record(job: &str) -> AuditRecord {
        AuditRecord::new("w", Outcome::Signed, job, Some("ci"), "k")
    }

    #[tokio::test]
    async fn writes_whose_answers_were_lost_leave_a_log_that_verifies() {
        let store = LossyStore::default();
        let log = AuditLog::new("s3://b/a/", "w").unwrap();
        // The index record that opens the chain lands, but its answer is lost; the retry
        // must not open the chain a second time.
        store.lose.store(1, Ordering::SeqCst);
        assert!(log.append(&store, record("job-1")).await.is_err());
        log.append(&store, record("job-1")).await.unwrap();
        // A record lands without an answer and the job retries it: the same record, once.
        let rec2 = record("job-2");
        store.lose.store(1, Ordering::SeqCst);
        assert!(log.append(&store, rec2.clone()).await.is_err());
        log.append(&store, rec2).await.unwrap();
        // The last record lands without an answer and nobody retries it (the job gave up):
        // the close must still count it.
        store.lose.store(1, Ordering::SeqCst);
        assert!(log.append(&store, record("job-3")).await.is_err());
        log.close(&store).await.unwrap();

        let summary = verify_log("a/", &store.all()).unwrap_or_else(|e| panic!("{e}\n{:#?}", store.all()));
        assert_eq!(summary.index.records, 2, "one open and one close");
        assert_eq!(summary.chains.len(), 1);
        assert_eq!((summary.chains[0].summary.records, summary.chains[0].end.clone()), (3, ChainEnd::Closed));
        // The close record closed it at the head that is there.
        let last = store.all().into_iter().rfind(|(k, _)| k.contains("/chains/")).unwrap();
        let idx = store.all().into_iter().rfind(|(k, _)| k.contains("/index/")).unwrap();
        let closed: IndexRecord = serde_json::from_slice(&idx.1).unwrap();
        assert_eq!(closed.closed_at.unwrap().head_sha256, chain::sha256_hex(&last.1));
    }
}
