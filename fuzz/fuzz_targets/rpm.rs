//! The RPM path of `signet sign`: header bounds checks, the rpm crate's parser, the
//! signature header rebuild and the payload copy, with a real Ed25519 key. Any input may be
//! refused; none may panic, abort or allocate beyond the header limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_fuzz::{signing_key, signing_time};

fuzz_target!(|data: &[u8]| {
    let (mut key, t) = (signing_key(), signing_time());
    let checker = signet::check::Checker::new(vec![key.public()]);
    let mut out = Vec::new();
    if signet::sign::rpm::sign(&mut &data[..], &mut out, &mut key, &checker, false, t).is_ok() {
        // What signet signed (and self-checked from memory), it must verify as written.
        signet::sign::rpm::verify(&mut &out[..], &checker, true).expect("signed RPM does not verify");
    }
});
