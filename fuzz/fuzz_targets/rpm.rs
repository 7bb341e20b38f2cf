//! The RPM path of `signet sign`: header bounds checks, the rpm crate's parser, the
//! signature header rebuild and the payload copy, with a real Ed25519 key. Any input may be
//! refused; none may panic, abort or allocate beyond the header limits.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use signet::key::{self, Algo, SigningKey};

fn signing_key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    KEY.get_or_init(|| SigningKey::new(key::generate(Algo::Ed25519, "fuzz <fuzz@example.org>", t).unwrap()).unwrap())
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut key = signing_key();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
    let mut out = Vec::new();
    if signet::sign::rpm::sign(&mut &data[..], &mut out, &mut key, t).is_ok() {
        // What signet signed, it must verify (the worker's self-check does the same).
        let checker = signet::check::Checker::new(vec![key.public()]);
        signet::sign::rpm::verify(&mut &out[..], &checker, true).expect("signed RPM does not verify");
    }
});
