//! The DEB path of `signet sign`: the strict ar reader, member order, the debian-binary and
//! signed-data checks, and the ar writer, with a real Ed25519 key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_fuzz::{signing_key, signing_time};

fuzz_target!(|data: &[u8]| {
    let (mut key, t) = (signing_key(), signing_time());
    let checker = signet::check::Checker::new(vec![key.public()]);
    let mut out = Vec::new();
    if signet::sign::deb::sign(&mut &data[..], &mut out, &mut key, &checker, t).is_ok() {
        signet::sign::deb::verify(&mut std::io::Cursor::new(&out), &checker).expect("signed DEB does not verify");
    }
    // The reader on its own, as `signet verify` uses it.
    let _ = signet::sign::deb::verify(&mut std::io::Cursor::new(data), &signet::check::Checker::new(vec![key.public()]));
});
