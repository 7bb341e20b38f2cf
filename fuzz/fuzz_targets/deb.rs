//! The DEB path of `signet sign`: the strict ar reader, member order, the debian-binary and
//! signed-data checks, and the ar writer, with a real Ed25519 key.
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
    if signet::sign::deb::sign(&mut &data[..], &mut out, &mut key, t).is_ok() {
        let checker = signet::check::Checker::new(vec![key.public()]);
        signet::sign::deb::verify(&mut std::io::Cursor::new(&out), &checker).expect("signed DEB does not verify");
    }
    // The reader on its own, as `signet verify` uses it.
    let _ = signet::sign::deb::verify(&mut std::io::Cursor::new(data), &signet::check::Checker::new(vec![key.public()]));
});
