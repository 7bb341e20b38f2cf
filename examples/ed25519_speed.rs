//! Ed25519 verifications per second with ed25519-dalek, as signet's self-check makes them
//! (`src/check.rs`), in the format of `openssl speed -mr`'s figures: what
//! `bench/rpmsign.sh --algo ed25519` sets beside `openssl speed ed25519` in the same run.
//!
//! `cargo run --release --example ed25519_speed [SECONDS]` (default 3) prints
//! `verify/s N` for one core.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey, Verifier};

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let mut seed = [0u8; 32];
    // Any key will do for a speed figure; a fixed one keeps runs comparable.
    seed.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key();
    // A SHA-256 digest's length: what an RPM header signature signs.
    let digest = [0x5au8; 32];
    let sig = key.sign(&digest);
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..100 {
            public.verify(&digest, &sig).expect("the signature verifies");
        }
        n += 100;
    }
    println!("verify/s {:.1}", n as f64 / start.elapsed().as_secs_f64());
}
