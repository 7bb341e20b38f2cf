//! One hash chain of JSON records in S3: `PREFIX` + `N` (20 digits, from 1) + `.json`.
//!
//! Each record carries its `seq` and `prev_sha256`, the SHA-256 of the exact bytes of the
//! record before it ([`GENESIS`] for record 1). Records are written with `If-None-Match: *`,
//! so none is ever overwritten. A chain has one writer (a worker's own chain) or a few that
//! rarely meet (the index): a writer that finds its number taken reads what is there, and
//! either recognises its own earlier attempt (a PUT whose answer was lost) or continues
//! after the other writer's record.

use sha2::{Digest, Sha256};

use crate::store::{ObjectStore, StoreError};

/// `prev_sha256` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Largest record read back.
pub(super) const RECORD_LIMIT: u64 = 4 * 1024 * 1024;
/// Appends that lose the race this many times in a row give up (transiently).
const MAX_RACES: usize = 64;

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The name of record `seq` of the chain at `prefix`.
pub(super) fn record_key(prefix: &str, seq: u64) -> String {
    format!("{prefix}{seq:020}.json")
}

/// The number of the record at `key` of the chain at `prefix`, if it is one.
pub(super) fn record_seq(prefix: &str, key: &str) -> Option<u64> {
    key.strip_prefix(prefix)?
        .strip_suffix(".json")
        .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// The appending end of one chain.
#[derive(Debug)]
pub(super) struct Chain {
    pub(super) bucket: String,
    pub(super) prefix: String,
    /// The last record this process knows of: (seq, sha256); `None` until looked up.
    head: tokio::sync::Mutex<Option<(u64, String)>>,
}

impl Chain {
    /// A chain that may already hold records (its head is looked up on first use).
    pub(super) fn existing(bucket: &str, prefix: String) -> Self {
        Chain { bucket: bucket.to_owned(), prefix, head: tokio::sync::Mutex::new(None) }
    }

    /// A chain this process has just named and alone writes: it starts empty, with no lookup.
    pub(super) fn new_empty(bucket: &str, prefix: String) -> Self {
        Chain { bucket: bucket.to_owned(), prefix, head: tokio::sync::Mutex::new(Some((0, GENESIS.to_owned()))) }
    }

    fn key(&self, seq: u64) -> String {
        record_key(&self.prefix, seq)
    }

    async fn get<S: ObjectStore>(&self, store: &S, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let r = store.get_small(&self.bucket, &self.key(seq), RECORD_LIMIT).await;
        let kind = match &r {
            Ok(Some(_)) => None,
            Ok(None) => Some("not_found"),
            Err(e) => Some(e.kind()),
        };
        crate::observe::audit_request("get", kind);
        r
    }

    /// The head: (seq, sha256), looked up once if not yet known.
    pub(super) async fn head<S: ObjectStore>(&self, store: &S) -> Result<(u64, String), StoreError> {
        let mut head = self.head.lock().await;
        if head.is_none() {
            *head = Some(self.find_head(store).await?);
        }
        Ok(head.clone().unwrap_or((0, GENESIS.to_owned())))
    }

    /// Brings a shared chain's head up to date before an append: from the known head, reads
    /// forward while records exist (one GET each, plus one that finds nothing), so an
    /// append under a lock that other writers also take does not start from a stale head.
    /// Returns the records it stepped over, so that a caller whose earlier PUT landed
    /// without an answer can find it there.
    pub(super) async fn refresh<S: ObjectStore>(&self, store: &S) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut head = self.head.lock().await;
        let Some((mut seq, mut sha)) = head.clone() else {
            *head = Some(self.find_head(store).await?);
            return Ok(Vec::new());
        };
        let mut passed = Vec::new();
        while let Some(bytes) = self.get(store, seq + 1).await? {
            seq += 1;
            sha = sha256_hex(&bytes);
            passed.push(bytes);
        }
        *head = Some((seq, sha));
        Ok(passed)
    }

    /// Finds the last record with O(log n) reads: double until a number is free, then bisect.
    pub(super) async fn find_head<S: ObjectStore>(&self, store: &S) -> Result<(u64, String), StoreError> {
        if self.get(store, 1).await?.is_none() {
            return Ok((0, GENESIS.to_owned()));
        }
        let (mut lo, mut hi) = (1u64, 2u64);
        while self.get(store, hi).await?.is_some() {
            lo = hi;
            // Planted records cannot make this run for ever: no chain has 2^62 records.
            hi = hi.checked_mul(2).filter(|h| *h < 1 << 62).ok_or_else(|| StoreError::Rejected {
                bucket: self.bucket.clone(),
                key: self.key(lo),
                message: "the chain claims more than 2^62 records".into(),
            })?;
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

    /// Appends the record `make(seq, prev_sha256)` after the head; returns its number, its
    /// SHA-256, its key and its bytes. `make` must give the same bytes for the same
    /// arguments, so that a retried append recognises its own earlier write.
    pub(super) async fn append<S: ObjectStore>(
        &self,
        store: &S,
        mut make: impl FnMut(u64, &str) -> Result<Vec<u8>, String>,
    ) -> Result<Appended, StoreError> {
        let mut head = self.head.lock().await;
        for _ in 0..MAX_RACES {
            let (seq, prev) = match head.clone() {
                Some(h) => h,
                None => self.find_head(store).await?,
            };
            let seq = seq + 1;
            let key = self.key(seq);
            let bytes = make(seq, &prev).map_err(|message| StoreError::Transient {
                bucket: self.bucket.clone(),
                key: key.clone(),
                message,
            })?;
            // A failed PUT keeps the head: the retry uses the same number, and finds out
            // below whether the failed attempt landed after all.
            let put = store.put_bytes(&self.bucket, &key, bytes.clone(), "application/json", true).await;
            crate::observe::audit_request("put", put.as_ref().err().map(StoreError::kind));
            match put {
                Ok(()) => {}
                Err(StoreError::Exists { .. }) => match self.get(store, seq).await? {
                    Some(there) if there == bytes => {}
                    Some(theirs) => {
                        // Another writer took this number: continue after its record.
                        *head = Some((seq, sha256_hex(&theirs)));
                        continue;
                    }
                    None => {
                        *head = None;
                        continue;
                    }
                },
                Err(e) => {
                    *head = Some((seq - 1, prev));
                    return Err(e);
                }
            }
            let sha256 = sha256_hex(&bytes);
            *head = Some((seq, sha256.clone()));
            return Ok(Appended { seq, sha256, key, bytes });
        }
        Err(StoreError::Transient {
            bucket: self.bucket.clone(),
            key: self.prefix.clone(),
            message: format!("lost the race to append {MAX_RACES} times in a row"),
        })
    }
}

/// A record as written.
#[derive(Debug, Clone)]
pub(super) struct Appended {
    pub(super) seq: u64,
    pub(super) sha256: String,
    pub(super) key: String,
    pub(super) bytes: Vec<u8>,
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub records: u64,
    /// SHA-256 of the last record (`GENESIS` for an empty chain).
    pub head_sha256: String,
    /// SHA-256 of every record, in order.
    pub hashes: Vec<String>,
}

/// Checks the links of a chain given as (key, bytes) in key order; `links` reads a record's
/// (seq, prev_sha256). The error names the first break.
pub(super) fn verify_links(
    prefix: &str,
    objects: &[(String, Vec<u8>)],
    links: impl Fn(&[u8]) -> Result<(u64, String), String>,
) -> Result<ChainSummary, String> {
    let mut prev = GENESIS.to_owned();
    let mut prev_key = String::new();
    let mut hashes = Vec::new();
    for (i, (key, bytes)) in objects.iter().enumerate() {
        let expected = i as u64 + 1;
        let seq = record_seq(prefix, key)
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
                "{which}: the chain goes from {} to {key} (deleted?)",
                if prev_key.is_empty() { "its start" } else { &prev_key }
            ));
        }
        let (claimed, links_to) =
            links(bytes).map_err(|e| format!("record {seq} ({key}) is not a valid record: {e}"))?;
        if claimed != seq {
            return Err(format!("record {seq} ({key}) says it is record {claimed} (moved or edited)"));
        }
        if links_to != prev {
            return Err(if seq == 1 {
                format!("record 1 ({key}) does not start the chain (records before it deleted?)")
            } else {
                format!(
                    "record {} ({prev_key}) was edited or replaced: it hashes to {prev}, but record {seq} ({key}) \
                     links to {links_to}",
                    seq - 1
                )
            });
        }
        prev = sha256_hex(bytes);
        prev_key = key.clone();
        hashes.push(prev.clone());
    }
    Ok(ChainSummary { records: objects.len() as u64, head_sha256: prev, hashes })
}
