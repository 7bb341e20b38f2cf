//! The audit trail: one JSON record per signature made and per job denied, appended to a
//! hash chain in S3.
//!
//! Record `N` is the object `PREFIX` + `N` (20 digits, from 1) + `.json`, written with
//! `If-None-Match: *`, so a record is never overwritten and two workers appending at once
//! cannot both take the same number: the loser reads the winner's record and appends after
//! it. Each record carries `prev_sha256`, the SHA-256 of the exact bytes of record `N-1`
//! (64 zeros for record 1), so editing, replacing or deleting a record breaks the chain at a
//! point `signet audit verify` names. Every record is also written to the structured log
//! (target `signet::audit`) with its own SHA-256, a second copy that anchors the head.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::store::{ObjectStore, StoreError};

/// `prev_sha256` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Largest record read back.
const RECORD_LIMIT: u64 = 4 * 1024 * 1024;
/// Appends that lose the race this many times in a row give up (transiently).
const MAX_RACES: usize = 64;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Signatures were made (and are about to be written).
    Signed,
    /// The policy refused the job.
    Denied,
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
            artifacts: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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

/// The appending end of an audit log.
#[derive(Debug)]
pub struct AuditLog {
    bucket: String,
    prefix: String,
    /// The last record this process knows of: (seq, sha256).
    head: tokio::sync::Mutex<Option<(u64, String)>>,
}

impl AuditLog {
    /// The log at `s3://bucket/prefix`.
    pub fn new(uri: &str) -> Result<Self, String> {
        let (bucket, prefix) = parse_location(uri)?;
        Ok(AuditLog { bucket, prefix, head: tokio::sync::Mutex::new(None) })
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn key(&self, seq: u64) -> String {
        format!("{}{seq:020}.json", self.prefix)
    }

    async fn get<S: ObjectStore>(&self, store: &S, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        store.get_small(&self.bucket, &self.key(seq), RECORD_LIMIT).await
    }

    /// Finds the last record with O(log n) reads: double until a number is free, then bisect.
    async fn find_head<S: ObjectStore>(&self, store: &S) -> Result<(u64, String), StoreError> {
        if self.get(store, 1).await?.is_none() {
            return Ok((0, GENESIS.to_owned()));
        }
        let (mut lo, mut hi) = (1u64, 2u64);
        while self.get(store, hi).await?.is_some() {
            lo = hi;
            hi = hi.saturating_mul(2);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.get(store, mid).await?.is_some() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let bytes = self.get(store, lo).await?.ok_or_else(|| StoreError::Transient {
            bucket: self.bucket.clone(),
            key: self.key(lo),
            message: "audit record vanished while looking for the head".into(),
        })?;
        Ok((lo, sha256_hex(&bytes)))
    }

    /// Appends `record` after the current head; returns it as written and its SHA-256.
    pub async fn append<S: ObjectStore>(
        &self,
        store: &S,
        mut record: AuditRecord,
    ) -> Result<(AuditRecord, String), StoreError> {
        let mut head = self.head.lock().await;
        for _ in 0..MAX_RACES {
            let (seq, prev) = match head.clone() {
                Some(h) => h,
                None => self.find_head(store).await?,
            };
            record.seq = seq + 1;
            record.prev_sha256 = prev;
            let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Transient {
                bucket: self.bucket.clone(),
                key: self.key(record.seq),
                message: format!("cannot serialize the audit record: {e}"),
            })?;
            let key = self.key(record.seq);
            match store.put_bytes(&self.bucket, &key, bytes.clone(), "application/json", true).await {
                Ok(()) => {
                    let hash = sha256_hex(&bytes);
                    *head = Some((record.seq, hash.clone()));
                    info!(
                        target: "signet::audit",
                        seq = record.seq,
                        sha256 = %hash,
                        object = %format!("s3://{}/{key}", self.bucket),
                        record = %String::from_utf8_lossy(&bytes),
                        "audit record appended"
                    );
                    return Ok((record, hash));
                }
                Err(StoreError::Exists { .. }) => {
                    // Another worker took this number: continue after its record.
                    *head = match self.get(store, record.seq).await? {
                        Some(theirs) => Some((record.seq, sha256_hex(&theirs))),
                        None => None,
                    };
                }
                Err(e) => {
                    *head = None;
                    return Err(e);
                }
            }
        }
        Err(StoreError::Transient {
            bucket: self.bucket.clone(),
            key: self.prefix.clone(),
            message: format!("lost the race to append {MAX_RACES} times in a row"),
        })
    }

    /// Reads the whole log (for `signet audit verify`): (key, bytes) in key order.
    pub async fn read_all(&self, store: &crate::store::s3::S3Store) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for key in store.list_keys(&self.bucket, &self.prefix).await? {
            let bytes = store.get_small(&self.bucket, &key, RECORD_LIMIT).await?.unwrap_or_default();
            out.push((key, bytes));
        }
        Ok(out)
    }
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub records: u64,
    /// SHA-256 of the last record (`GENESIS` for an empty log).
    pub head_sha256: String,
    /// SHA-256 of every record, in order.
    pub hashes: Vec<String>,
}

/// Checks a chain given as (key, bytes) in key order. The error names the first break.
pub fn verify_chain(prefix: &str, objects: &[(String, Vec<u8>)]) -> Result<ChainSummary, String> {
    let mut prev = GENESIS.to_owned();
    let mut prev_key = String::new();
    let mut hashes = Vec::new();
    for (i, (key, bytes)) in objects.iter().enumerate() {
        let expected = i as u64 + 1;
        let seq: u64 = key
            .strip_prefix(prefix)
            .and_then(|k| k.strip_suffix(".json"))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{key}: not an audit record name (expected {prefix}NNNNNNNNNNNNNNNNNNNN.json)"))?;
        if seq < expected {
            // Numbered 0, or a number already used: keys are listed in order, so this one is
            // out of place (a forged record slipped in, or a copy under another name).
            return Err(format!("{key}: record number {seq} is out of sequence (expected {expected})"));
        }
        if seq != expected {
            let which = if expected == seq - 1 {
                format!("record {expected} is missing")
            } else {
                format!("records {expected} to {} are missing", seq - 1)
            };
            return Err(format!(
                "{which}: the log goes from {} to {key} (deleted?)",
                if prev_key.is_empty() { "its start" } else { &prev_key }
            ));
        }
        let record: AuditRecord = serde_json::from_slice(bytes)
            .map_err(|e| format!("record {seq} ({key}) is not a valid audit record: {e}"))?;
        if record.seq != seq {
            return Err(format!("record {seq} ({key}) says it is record {} (moved or edited)", record.seq));
        }
        if record.prev_sha256 != prev {
            return Err(if seq == 1 {
                format!("record 1 ({key}) does not start the chain (records before it deleted?)")
            } else {
                format!(
                    "record {} ({prev_key}) was edited or replaced: it hashes to {prev}, but record {seq} ({key}) \
                     links to {}",
                    seq - 1,
                    record.prev_sha256
                )
            });
        }
        prev = sha256_hex(bytes);
        prev_key = key.clone();
        hashes.push(prev.clone());
    }
    Ok(ChainSummary { records: objects.len() as u64, head_sha256: prev, hashes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_numbered_zero_is_named_not_a_panic() {
        let mut objects = chain(2);
        let (_, first) = objects[0].clone();
        objects.insert(0, (format!("p/{:020}.json", 0), first));
        let err = verify_chain("p/", &objects).unwrap_err();
        assert!(err.contains("00000000000000000000.json") && err.contains("out of sequence"), "{err}");
    }

    fn chain(n: u64) -> Vec<(String, Vec<u8>)> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRecord::new("w", Outcome::Signed, &format!("job-{seq}"), Some("ci"), "k");
                r.seq = seq;
                r.prev_sha256 = prev.clone();
                let bytes = serde_json::to_vec(&r).unwrap();
                prev = sha256_hex(&bytes);
                (format!("a/{seq:020}.json"), bytes)
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let s = verify_chain("a/", &c).unwrap();
        assert_eq!(s.records, 5);
        assert_eq!(s.head_sha256, sha256_hex(&c[4].1));
        assert_eq!(verify_chain("a/", &[]).unwrap().head_sha256, GENESIS);
    }

    #[test]
    fn edits_and_deletions_are_named() {
        let mut c = chain(5);
        let edited = String::from_utf8(c[2].1.clone()).unwrap().replace("job-3", "job-X");
        c[2].1 = edited.into_bytes();
        let e = verify_chain("a/", &c).unwrap_err();
        assert!(e.starts_with("record 3 (a/00000000000000000003.json) was edited"), "{e}");

        let mut c = chain(5);
        c.remove(1);
        let e = verify_chain("a/", &c).unwrap_err();
        assert!(e.starts_with("record 2 is missing"), "{e}");

        let mut c = chain(3);
        c.remove(0);
        assert!(verify_chain("a/", &c).unwrap_err().starts_with("record 1 is missing"));
    }
}
