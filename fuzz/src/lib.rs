//! What the fuzz targets share: one Ed25519 signing key, made once, and fixed times.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use signet::key::{self, Algo, SigningKey};

/// The key the signing targets sign with (generated once per process).
pub fn signing_key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    KEY.get_or_init(|| {
        let cert = key::generate(Algo::Ed25519, "fuzz <fuzz@example.org>", created).expect("generate the fuzz key");
        SigningKey::new(cert).expect("a signing key")
    })
    .clone()
}

/// The signature time of every fuzz signature (after the key's creation).
pub fn signing_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100)
}
