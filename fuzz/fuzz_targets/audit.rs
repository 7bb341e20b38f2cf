//! The audit chain and log verifiers: arbitrary objects must never crash them, and any
//! edit, removal or swap of a record that a later record links to must be found.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::Digest;
use signet::audit::{AuditRecord, GENESIS, Outcome, verify_chain, verify_log};

fn chain(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut prev = GENESIS.to_owned();
    (1..=n as u64)
        .map(|seq| {
            let mut r = AuditRecord::new("w", Outcome::Signed, &format!("job-{seq}"), Some("ci"), "k");
            r.seq = seq;
            r.prev_sha256 = prev.clone();
            r.time = "2026-01-01T00:00:00.000Z".into();
            let bytes = serde_json::to_vec(&r).unwrap();
            prev = hex::encode(sha2::Sha256::digest(&bytes));
            (format!("a/{seq:020}.json"), bytes)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // Raw objects: whatever a bucket may hold.
    let raw: Vec<(String, Vec<u8>)> =
        data.split(|&b| b == 0xff).enumerate().map(|(i, r)| (format!("a/{:020}.json", i + 1), r.to_vec())).collect();
    let _ = verify_chain("a/", &raw);
    // The same bytes as a whole log: records spread over the legacy chain, the index and
    // worker chains (the names come from the input too), in key order as S3 lists them.
    let places = ["a/", "a/index/", "a/chains/x/", "a/chains/y-1/", "a/chains/../", "a/other/"];
    let mut log: Vec<(String, Vec<u8>)> = data
        .split(|&b| b == 0xff)
        .enumerate()
        .map(|(i, r)| {
            let place = places[r.first().map_or(0, |b| *b as usize % places.len())];
            (format!("{place}{:020}.json", i / places.len() + 1), r.to_vec())
        })
        .collect();
    log.sort();
    log.dedup_by(|a, b| a.0 == b.0);
    let _ = verify_log("a/", &log);

    // A real chain, tampered with as the input says.
    let [n, op, at, pos, rest @ ..] = data else { return };
    let n = 2 + (*n as usize % 6);
    let good = chain(n);
    let head = verify_chain("a/", &good).expect("an intact chain verifies").head_sha256;
    let at = *at as usize % n;
    let mut bad = good.clone();
    match op % 3 {
        0 => {
            // Overwrite bytes of record `at`.
            let bytes = &mut bad[at].1;
            let start = *pos as usize % bytes.len();
            for (i, b) in rest.iter().enumerate().take(bytes.len() - start) {
                bytes[start + i] = *b;
            }
        }
        1 => {
            bad.remove(at);
        }
        _ => {
            let other = (at + 1) % n;
            let (a, b) = (bad[at].1.clone(), bad[other].1.clone());
            bad[at].1 = b;
            bad[other].1 = a;
        }
    }
    if bad == good {
        return;
    }
    match verify_chain("a/", &bad) {
        Err(_) => {}
        // Only the newest record has no successor to link to it: then the head the
        // verifier reports must differ, so a head kept elsewhere catches it.
        Ok(summary) => assert_ne!(summary.head_sha256, head, "a tampered chain verified with the same head"),
    }
});
