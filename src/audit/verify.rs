//! `signet audit verify`: every chain of a log, the index that lists them, and the format-1
//! chain that came before.

use std::collections::BTreeMap;

use super::chain::{ChainSummary, record_seq, verify_links};
use super::{AuditRecord, ChainHead, IndexEvent, IndexRecord};

/// How a worker's chain ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEnd {
    /// Its worker closed it: it has exactly the records the index says.
    Closed,
    /// Its worker is still running, or stopped without closing it (killed, lost S3).
    Open,
}

/// One worker's chain, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub name: String,
    pub worker: String,
    pub summary: ChainSummary,
    pub end: ChainEnd,
}

/// An intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// The format-1 chain directly under the prefix (empty if there is none).
    pub legacy: ChainSummary,
    pub index: ChainSummary,
    pub chains: Vec<ChainReport>,
}

impl LogSummary {
    /// Audit records in all chains (index records not counted).
    pub fn records(&self) -> u64 {
        self.legacy.records + self.chains.iter().map(|c| c.summary.records).sum::<u64>()
    }
}

fn audit_links(bytes: &[u8]) -> Result<(u64, String), String> {
    let r: AuditRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok((r.seq, r.prev_sha256))
}

fn index_links(bytes: &[u8]) -> Result<(u64, String), String> {
    let r: IndexRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok((r.seq, r.prev_sha256))
}

/// Checks one chain of audit records given as (key, bytes) in key order (a format-1 log, or
/// one worker's chain). The error names the first break.
pub fn verify_chain(prefix: &str, objects: &[(String, Vec<u8>)]) -> Result<ChainSummary, String> {
    verify_links(prefix, objects, audit_links)
}

/// A chain name as workers make them: letters, digits and `-` only.
fn valid_chain_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks a whole log given as every object under `prefix`, (key, bytes) in key order. The
/// error names the first break: the chain, the record and what is wrong with it.
pub fn verify_log(prefix: &str, objects: &[(String, Vec<u8>)]) -> Result<LogSummary, String> {
    let index_prefix = format!("{prefix}index/");
    let chains_prefix = format!("{prefix}chains/");
    let mut legacy = Vec::new();
    let mut index = Vec::new();
    let mut chains: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (key, bytes) in objects {
        let entry = (key.clone(), bytes.clone());
        if record_seq(prefix, key).is_some() {
            legacy.push(entry);
        } else if key.starts_with(&index_prefix) {
            index.push(entry);
        } else if let Some((name, _)) = key.strip_prefix(&chains_prefix).and_then(|r| r.split_once('/'))
            && valid_chain_name(name)
        {
            chains.entry(name.to_owned()).or_default().push(entry);
        } else {
            return Err(format!("{key}: not part of an audit log (an object added under its prefix?)"));
        }
    }

    let legacy_summary = verify_chain(prefix, &legacy).map_err(|e| format!("format-1 chain: {e}"))?;
    let index_summary = verify_links(&index_prefix, &index, index_links).map_err(|e| format!("index: {e}"))?;

    // What the index says of each chain: who opened it (in which record), how it ends.
    struct Listed {
        worker: String,
        opened_in: u64,
        closed: Option<(u64, ChainHead)>,
    }
    // Once the index exists, its record 1 says how long the format-1 chain was; a format-1
    // chain it does not anchor was added afterwards.
    if let Some((key, bytes)) = index.first()
        && legacy_summary.records > 0
        && serde_json::from_slice::<IndexRecord>(bytes).is_ok_and(|r| r.legacy.is_none())
    {
        return Err(format!(
            "format-1 chain: {} records, but index record 1 ({key}) anchors none (added after the index began?)",
            legacy_summary.records
        ));
    }
    let mut listed: BTreeMap<String, Listed> = BTreeMap::new();
    for (i, (key, bytes)) in index.iter().enumerate() {
        let seq = i as u64 + 1;
        let r: IndexRecord = serde_json::from_slice(bytes).map_err(|e| format!("index: {key}: {e}"))?;
        if !valid_chain_name(&r.chain) {
            return Err(format!("index record {seq} ({key}) names an invalid chain {:?}", r.chain));
        }
        if let Some(anchor) = &r.legacy {
            if seq != 1 {
                return Err(format!("index record {seq} ({key}) anchors the format-1 chain; only record 1 may"));
            }
            let at = anchor.records.checked_sub(1).and_then(|i| legacy_summary.hashes.get(i as usize));
            if at != Some(&anchor.head_sha256) {
                return Err(format!(
                    "format-1 chain: index record 1 ({key}) anchors it at {} records with head {}, but {}",
                    anchor.records,
                    anchor.head_sha256,
                    match at {
                        None => format!("it has only {} (records removed from its end?)", legacy_summary.records),
                        Some(h) => format!("its record {} hashes to {h} (edited or replaced?)", anchor.records),
                    }
                ));
            }
        }
        match (r.event, listed.get_mut(&r.chain)) {
            (IndexEvent::Opened, None) => {
                listed.insert(r.chain.clone(), Listed { worker: r.worker.clone(), opened_in: seq, closed: None });
            }
            (IndexEvent::Opened, Some(l)) => {
                return Err(format!(
                    "index record {seq} ({key}) opens chain {} again (first opened in index record {})",
                    r.chain, l.opened_in
                ));
            }
            (IndexEvent::Closed, Some(l)) if l.closed.is_none() => {
                let head = r
                    .closed_at
                    .ok_or_else(|| format!("index record {seq} ({key}) closes {} without its head", r.chain))?;
                l.closed = Some((seq, head));
            }
            (IndexEvent::Closed, _) => {
                return Err(format!("index record {seq} ({key}) closes chain {}, which is not open", r.chain));
            }
        }
    }

    let mut reports = Vec::new();
    for (name, objs) in &chains {
        let chain_prefix = format!("{chains_prefix}{name}/");
        let Some(l) = listed.remove(name) else {
            return Err(format!(
                "chain {name} ({} records) is not in the index (added, or its index records removed?)",
                objs.len()
            ));
        };
        let summary = verify_chain(&chain_prefix, objs).map_err(|e| format!("chain {name}: {e}"))?;
        let end = match l.closed {
            None => ChainEnd::Open,
            Some((_, head)) if head.records == summary.records && head.head_sha256 == summary.head_sha256 => {
                ChainEnd::Closed
            }
            Some((seq, head)) => {
                let actual = summary.hashes.get((head.records as usize).wrapping_sub(1));
                return Err(format!(
                    "chain {name}: index record {seq} closed it at {} records with head {}, but {}",
                    head.records,
                    head.head_sha256,
                    if summary.records < head.records {
                        format!("it has {} (records removed from its end?)", summary.records)
                    } else if summary.records > head.records {
                        format!("it has {} (records added after it was closed?)", summary.records)
                    } else {
                        format!(
                            "its record {} hashes to {} (edited or replaced?)",
                            head.records,
                            actual.map_or("nothing", String::as_str)
                        )
                    }
                ));
            }
        };
        reports.push(ChainReport { name: name.clone(), worker: l.worker, summary, end });
    }
    // Chains the index lists that have no records left.
    for (name, l) in listed {
        match l.closed {
            Some((seq, head)) if head.records > 0 => {
                return Err(format!(
                    "chain {name}: index record {seq} closed it at {} records, but none is there (deleted?)",
                    head.records
                ));
            }
            // Opened and never written to: its worker stopped between opening it and
            // writing its first record. (A chain removed whole looks the same; the structured
            // log holds every record's hash.)
            _ => reports.push(ChainReport {
                name,
                worker: l.worker,
                summary: ChainSummary { records: 0, head_sha256: super::GENESIS.to_owned(), hashes: Vec::new() },
                end: if l.closed.is_some() { ChainEnd::Closed } else { ChainEnd::Open },
            }),
        }
    }
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(LogSummary { legacy: legacy_summary, index: index_summary, chains: reports })
}

#[cfg(test)]
mod tests {
    use super::super::chain::sha256_hex;
    use super::super::{GENESIS, Outcome};
    use super::*;

    type Objects = Vec<(String, Vec<u8>)>;

    /// A chain of `n` audit records at `prefix`.
    fn records(prefix: &str, n: u64) -> Objects {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRecord::new("w", Outcome::Signed, &format!("{prefix}job-{seq}"), Some("ci"), "k");
                r.seq = seq;
                r.prev_sha256 = prev.clone();
                let bytes = serde_json::to_vec(&r).unwrap();
                prev = sha256_hex(&bytes);
                (format!("{prefix}{seq:020}.json"), bytes)
            })
            .collect()
    }

    /// An index chain from (event, chain, closed_at, legacy) entries.
    fn index(entries: &[(IndexEvent, &str, Option<ChainHead>, Option<ChainHead>)]) -> Objects {
        let mut prev = GENESIS.to_owned();
        entries
            .iter()
            .enumerate()
            .map(|(i, (event, chain, closed_at, legacy))| {
                let seq = i as u64 + 1;
                let r = IndexRecord {
                    seq,
                    prev_sha256: prev.clone(),
                    time: "2026-12-01T00:00:00.000Z".into(),
                    worker: format!("w-{chain}"),
                    event: *event,
                    chain: chain.to_string(),
                    closed_at: closed_at.clone(),
                    legacy: legacy.clone(),
                };
                let bytes = serde_json::to_vec(&r).unwrap();
                prev = sha256_hex(&bytes);
                (format!("a/index/{seq:020}.json"), bytes)
            })
            .collect()
    }

    fn head(objs: &Objects) -> ChainHead {
        ChainHead { records: objs.len() as u64, head_sha256: sha256_hex(&objs.last().unwrap().1) }
    }

    /// A format-1 chain of 3, then chains A (closed, 4 records), B (open, 3), C (opened, none).
    fn log() -> Objects {
        let legacy = records("a/", 3);
        let a = records("a/chains/A/", 4);
        let b = records("a/chains/B/", 3);
        let idx = index(&[
            (IndexEvent::Opened, "A", None, Some(head(&legacy))),
            (IndexEvent::Opened, "B", None, None),
            (IndexEvent::Opened, "C", None, None),
            (IndexEvent::Closed, "A", Some(head(&a)), None),
        ]);
        let mut all: Objects = [legacy, a, b, idx].concat();
        all.sort();
        all
    }

    fn replace(objs: &mut Objects, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut objs.iter_mut().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key}")).1);
    }

    fn remove(objs: &mut Objects, key: &str) {
        objs.retain(|(k, _)| k != key);
    }

    fn edit(bytes: &mut Vec<u8>) {
        let s = String::from_utf8(bytes.clone()).unwrap().replacen("job-", "job-X", 1);
        *bytes = s.into_bytes();
    }

    fn broken(objs: Objects) -> String {
        verify_log("a/", &objs).expect_err("a tampered log must not verify")
    }

    #[test]
    fn an_intact_log_verifies_with_every_chain() {
        let s = verify_log("a/", &log()).unwrap();
        assert_eq!((s.legacy.records, s.index.records, s.records()), (3, 4, 10));
        let ends: Vec<_> = s.chains.iter().map(|c| (c.name.as_str(), c.summary.records, c.end.clone())).collect();
        assert_eq!(ends, [("A", 4, ChainEnd::Closed), ("B", 3, ChainEnd::Open), ("C", 0, ChainEnd::Open)]);
        assert_eq!(verify_log("a/", &[]).unwrap().records(), 0);
    }

    #[test]
    fn edits_removals_and_swaps_are_named_in_any_chain() {
        let mut l = log();
        replace(&mut l, "a/chains/B/00000000000000000002.json", edit);
        let e = broken(l);
        assert!(e.starts_with("chain B: record 2 (a/chains/B/00000000000000000002.json) was edited"), "{e}");

        let mut l = log();
        remove(&mut l, "a/chains/A/00000000000000000002.json");
        assert!(broken(l).starts_with("chain A: record 2 is missing"));

        // The newest record of a closed chain has no successor; the close record catches it.
        let mut l = log();
        replace(&mut l, "a/chains/A/00000000000000000004.json", edit);
        let e = broken(l);
        assert!(e.contains("chain A: index record 4 closed it at 4 records") && e.contains("edited"), "{e}");
        let mut l = log();
        remove(&mut l, "a/chains/A/00000000000000000004.json");
        assert!(broken(l).contains("records removed from its end"));

        // Two records swapped.
        let mut l = log();
        let one = l.iter().find(|(k, _)| k == "a/chains/B/00000000000000000001.json").unwrap().1.clone();
        let two = l.iter().find(|(k, _)| k == "a/chains/B/00000000000000000002.json").unwrap().1.clone();
        replace(&mut l, "a/chains/B/00000000000000000001.json", |b| *b = two);
        replace(&mut l, "a/chains/B/00000000000000000002.json", |b| *b = one);
        assert!(broken(l).starts_with("chain B: record 1 (a/chains/B/00000000000000000001.json) says it is record 2"));

        // A record moved into another chain.
        let mut l = log();
        let b3 = l.iter().find(|(k, _)| k == "a/chains/B/00000000000000000003.json").unwrap().1.clone();
        l.push(("a/chains/A/00000000000000000005.json".into(), b3));
        l.sort();
        let e = broken(l);
        assert!(e.starts_with("chain A: record 5 (a/chains/A/00000000000000000005.json) says it is record 3"), "{e}");

        // The format-1 chain, and the index itself.
        let mut l = log();
        replace(&mut l, "a/00000000000000000001.json", edit);
        assert!(broken(l).starts_with("format-1 chain: record 1 (a/00000000000000000001.json) was edited"));
        let mut l = log();
        remove(&mut l, "a/00000000000000000003.json");
        assert!(broken(l).contains("format-1 chain: index record 1 (a/index/00000000000000000001.json) anchors it"));
        let mut l = log();
        replace(&mut l, "a/index/00000000000000000002.json", |b| {
            *b = String::from_utf8(b.clone()).unwrap().replace("w-B", "w-Z").into_bytes()
        });
        assert!(broken(l).starts_with("index: record 2 (a/index/00000000000000000002.json) was edited"));
    }

    #[test]
    fn chains_the_index_does_not_vouch_for_are_named() {
        // A chain added beside the others.
        let mut l = log();
        l.extend(records("a/chains/Z/", 2));
        l.sort();
        assert!(broken(l).starts_with("chain Z (2 records) is not in the index"));
        // A closed chain removed whole.
        let mut l = log();
        l.retain(|(k, _)| !k.starts_with("a/chains/A/"));
        assert!(broken(l).starts_with("chain A: index record 4 closed it at 4 records, but none is there"));
        // A format-1 chain slipped in after the index began without one.
        let a = records("a/chains/A/", 2);
        let idx = index(&[(IndexEvent::Opened, "A", None, None), (IndexEvent::Closed, "A", Some(head(&a)), None)]);
        let mut l: Objects = [a, idx].concat();
        l.sort();
        assert!(verify_log("a/", &l).is_ok(), "the log without a format-1 chain verifies");
        l.extend(records("a/", 2));
        l.sort();
        let e = broken(l);
        assert!(e.starts_with("format-1 chain: 2 records, but index record 1"), "{e}");
        // Anything else under the prefix.
        let mut l = log();
        l.push(("a/notes.txt".into(), b"hi".to_vec()));
        l.sort();
        assert!(broken(l).starts_with("a/notes.txt: not part of an audit log"));
    }

    #[test]
    fn a_record_numbered_zero_is_named_not_a_panic() {
        let mut objects = chain(2);
        let (_, first) = objects[0].clone();
        objects.insert(0, (format!("p/{:020}.json", 0), first));
        let err = verify_chain("p/", &objects).unwrap_err();
        assert!(err.contains("00000000000000000000.json") && err.contains("out of sequence"), "{err}");
    }

    /// A format-1 chain of `n` records under `a/`.
    fn chain(n: u64) -> Vec<(String, Vec<u8>)> {
        records("a/", n)
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
