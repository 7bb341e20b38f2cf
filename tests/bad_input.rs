//! Bad input gets a clear error and a non-zero exit, never a panic, and nothing is left in
//! the output directory under a final name.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::*;

/// Runs `signet sign` on `files`, expects failure mentioning `needle`, and checks the
/// output directory holds no file at all (no partial output, no leftover staging).
#[track_caller]
fn sign_fails_cleanly(env: &Env, key: &str, files: &[PathBuf], needle: &str) {
    let out = env.path("out");
    let msg = fails(env.signet().args(["sign", "--key", key, "--out"]).arg(&out).args(files));
    assert!(msg.contains(needle), "expected {needle:?} in:\n{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    let left: Vec<String> = fs::read_dir(&out)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "output dir not empty after a failure: {left:?}");
}

#[test]
fn truncated_rpm_is_rejected() {
    let env = Env::new();
    env.generate("k", "ed25519");
    let fx = env.fixtures();
    let good = fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap();
    let good_deb = fx.join("deb/hello_1.0_all.deb");
    // Cut in the payload, in the main header, in the signature header, in the lead.
    for (i, cut) in [good.len() - 100, 2000, 200, 50].into_iter().enumerate() {
        let p = env.path(&format!("cut{i}.rpm"));
        fs::write(&p, &good[..cut]).unwrap();
        // A good DEB in the same batch must not be written either.
        sign_fails_cleanly(&env, "k", &[good_deb.clone(), p], "truncated");
    }
}

#[test]
fn corrupt_rpm_header_is_rejected() {
    let env = Env::new();
    env.generate("k", "ed25519");
    let fx = env.fixtures();
    let good = fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap();
    // Flip a letter of the description in the main header's data store (the fixture marks
    // it): the header digest no longer matches.
    let mut bad = good.clone();
    let marker = b"SIGNET-FIXTURE-DESCRIPTION";
    let at = bad.windows(marker.len()).position(|w| w == marker).expect("fixture description marker");
    bad[at + 2] ^= 0x20;
    let p = env.path("bad.rpm");
    fs::write(&p, &bad).unwrap();
    sign_fails_cleanly(&env, "k", std::slice::from_ref(&p), "corrupt");

    // A hostile header: index count far beyond rpm's limits.
    let mut hostile = good;
    hostile[96 + 8..96 + 12].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    fs::write(&p, &hostile).unwrap();
    sign_fails_cleanly(&env, "k", &[p], "corrupt RPM");
}

/// Builds an ar archive with the given members (name, content), in order, with `ar`.
fn ar_archive(env: &Env, name: &str, members: &[(&str, &[u8])]) -> PathBuf {
    let dir = env.path(&format!("ar-{name}"));
    fs::create_dir_all(&dir).unwrap();
    let out = env.path(name);
    let _ = fs::remove_file(&out);
    let mut cmd = Command::new("ar");
    cmd.arg("rcD").arg(&out);
    for (m, content) in members {
        fs::write(dir.join(m), content).unwrap();
        cmd.arg(dir.join(m));
    }
    ok(&mut cmd);
    out
}

#[test]
fn deb_with_members_missing_or_out_of_order_is_rejected() {
    let env = Env::new();
    env.generate("k", "ed25519");
    let ctrl: &[u8] = b"not really a tarball";
    let data: &[u8] = b"neither is this";
    let cases: [(&str, Vec<(&str, &[u8])>, &str); 3] = [
        ("no-data.deb", vec![("debian-binary", b"2.0\n"), ("control.tar.xz", ctrl)], "data.tar member missing"),
        (
            "swapped.deb",
            vec![("debian-binary", b"2.0\n"), ("data.tar.xz", data), ("control.tar.xz", ctrl)],
            "out of order",
        ),
        ("no-control.deb", vec![("debian-binary", b"2.0\n"), ("data.tar.xz", data)], "out of order"),
    ];
    for (name, members, needle) in cases {
        let deb = ar_archive(&env, name, &members);
        sign_fails_cleanly(&env, "k", std::slice::from_ref(&deb), needle);
        // Forced as a DEB, the same.
        let out = env.path("out");
        let msg = fails(env.signet().args(["sign", "--key", "k", "--format", "deb", "--out"]).arg(&out).arg(&deb));
        assert!(msg.contains(needle), "{msg}");
    }
    // Not an ar archive at all, forced as a DEB.
    let junk = env.path("junk.deb");
    fs::write(&junk, b"definitely not an archive").unwrap();
    let out = env.path("out");
    let msg = fails(env.signet().args(["sign", "--key", "k", "--format", "deb", "--out"]).arg(&out).arg(&junk));
    assert!(msg.contains("DEB"), "{msg}");
}

#[test]
fn unknown_key_is_rejected() {
    let env = Env::new();
    env.generate("k", "ed25519");
    let f = env.path("file.txt");
    fs::write(&f, b"hello").unwrap();
    sign_fails_cleanly(&env, "nope", &[f], "unknown key \"nope\"");
}

#[test]
fn wrong_passphrase_is_a_clear_error() {
    let env = Env::new();
    env.generate("k", "ed25519");
    let f = env.path("file.txt");
    fs::write(&f, b"hello").unwrap();
    fs::write(env.path("wrong"), "not the passphrase\n").unwrap();
    let out = env.path("out");
    let msg = fails(
        env.signet()
            .env("SIGNET_VAULT_PASSPHRASE_FILE", env.path("wrong"))
            .args(["sign", "--key", "k", "--out"])
            .arg(&out)
            .arg(&f),
    );
    assert!(msg.contains("passphrase does not unseal key k"), "{msg}");
    assert!(!msg.contains(PASSPHRASE) && !msg.contains("not the passphrase"), "secret in message: {msg}");
    assert!(listing(&out).is_empty());
}

#[test]
fn unreadable_vault_is_a_clear_error() {
    let env = Env::new();
    let f = env.path("file.txt");
    fs::write(&f, b"hello").unwrap();
    // No vault directory at all.
    let msg = fails(env.signet().args(["keys", "list"]));
    assert!(msg.contains("does not exist"), "{msg}");
    env.generate("k", "ed25519");
    // No passphrase configured.
    let msg = fails(
        env.signet()
            .env_remove("SIGNET_VAULT_PASSPHRASE_FILE")
            .args(["sign", "--key", "k", "--out"])
            .arg(env.path("o"))
            .arg(&f),
    );
    assert!(msg.contains("SIGNET_VAULT_PASSPHRASE_FILE"), "{msg}");
    // A vault record that is not a sealed key.
    let dir = env.path("vault/k");
    let record = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    fs::write(&record, b"{ this is not json").unwrap();
    sign_fails_cleanly(&env, "k", std::slice::from_ref(&f), "vault record corrupt");
    // A vault that is a file, not a directory.
    fs::write(env.path("notadir"), b"x").unwrap();
    let msg = fails(
        env.signet().env("SIGNET_VAULT", format!("dir:{}", env.path("notadir").display())).args(["keys", "list"]),
    );
    assert!(msg.contains("not a directory"), "{msg}");
}

#[test]
fn two_inputs_with_the_same_output_name_conflict() {
    let env = Env::new();
    env.generate("k", "ed25519");
    for d in ["a", "b"] {
        fs::create_dir_all(env.path(d)).unwrap();
        fs::write(env.path(&format!("{d}/same.txt")), d).unwrap();
    }
    sign_fails_cleanly(&env, "k", &[env.path("a/same.txt"), env.path("b/same.txt")], "output conflict");
}

#[test]
fn the_sealed_vault_holds_no_secret_key_in_the_clear() {
    let env = Env::new();
    env.generate("k", "ed25519");
    let dir = env.path("vault/k");
    for e in fs::read_dir(&dir).unwrap() {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PRIVATE KEY"), "armored secret key in the vault");
        assert!(!text.contains(PASSPHRASE));
    }
    // gpg finds only a public key in the record's clear part.
    let rec = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&fs::read(rec).unwrap()).unwrap();
    let public = v["public_key"].as_str().unwrap();
    assert!(public.contains("BEGIN PGP PUBLIC KEY BLOCK"));
    assert_eq!(v["kek"]["kind"], "argon2id");
}
