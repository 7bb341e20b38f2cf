//! Cross-format forgery: a key that may make only detached signatures must never produce
//! something a package verifier accepts. A detached signature over a DEB's member
//! concatenation would be a valid `_gpgorigin`; one over a Release file a valid
//! `Release.gpg`; one over an RPM header a valid header signature. Through a real worker
//! with a detached-only key: the exact forgeries are refused, and what a producer can get
//! signed instead (the same bytes with one byte more or less) fails `debsig-verify` and
//! `apt-get update` when assembled into a package or repository.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::stack::Stack;
use common::*;

/// The main header structure of an RPM (what its header signature covers).
fn rpm_header(rpm: &[u8]) -> Vec<u8> {
    let be = |at: usize| u32::from_be_bytes(rpm[at..at + 4].try_into().unwrap()) as usize;
    let sig_end = 96 + 16 + be(96 + 8) * 16 + be(96 + 12);
    let hdr = sig_end + (8 - sig_end % 8) % 8;
    rpm[hdr..hdr + 16 + be(hdr + 8) * 16 + be(hdr + 12)].to_vec()
}

/// Uploads `bytes` as `forge/NAME` and asks the worker for a detached signature.
fn detached_job(s: &Stack, id: &str, name: &str, bytes: &[u8]) -> signet::event::Event {
    let p = s.env.path(&format!("upload/{id}/{name}"));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, bytes).unwrap();
    let key = format!("forge/{id}/{name}");
    s.upload(&key, &p);
    let (_, ev) = s.submit_wait(id, "files", &format!("{id}/"), &[&key]);
    ev.unwrap_or_else(|| panic!("{id}: no event"))
}

/// A copy of the DEB at `deb` with `dir/_gpgorigin` appended as its origin signature.
fn with_origin(deb: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("assembled.deb");
    fs::copy(deb, &out).unwrap();
    ok(Command::new("ar").current_dir(dir).args(["q", "assembled.deb", "_gpgorigin"]));
    out
}

fn dearmor(asc: &Path, out: &Path) {
    ok(Command::new("gpg").args(["--batch", "--yes", "--dearmor", "--output"]).arg(out).arg(asc));
}

fn refused(ev: &signet::event::Event, id: &str) {
    let err = ev.data.error.as_ref().unwrap_or_else(|| panic!("{id}: signed a forgery: {ev:#?}"));
    assert_eq!(err.code.as_str(), "invalid_artifact", "{id}: {err:?}");
    assert!(err.message.contains("refusing a detached signature"), "{id}: {}", err.message);
}

#[test]
fn a_detached_only_key_cannot_be_turned_into_package_signatures() {
    let s = Stack::new();
    let cert = s.env.generate("files", "ed25519");
    let (i, o, user) = (&s.input, &s.output, s.amqp_user());
    let policy = s.write_policy(
        "detached-only.toml",
        &format!(
            "[keys.files]\nproducers = [{user:?}]\nsources = [\"{i}/*\"]\noutputs = [\"{o}/*\"]\nformats = [\"detached\"]\n"
        ),
    );
    let _w = s.worker(1, &[("SIGNET_POLICY", policy.to_str().unwrap())]);
    let fx = s.env.fixtures();
    let deb_path = fx.join("deb/hello_1.0_all.deb");
    let deb = fs::read(&deb_path).unwrap();
    let concat: Vec<u8> = ar_members(&deb)[..3].iter().flat_map(|(_, data)| data.clone()).collect();

    // DEB: the exact member concatenation is refused ...
    refused(&detached_job(&s, "deb-exact", "members.bin", &concat), "deb-exact");
    // ... and what the producer can get signed does not make a DEB that debsig-verify takes.
    let mut near = b"x".to_vec();
    near.extend(&concat);
    let ev = detached_job(&s, "deb-near", "members.bin", &near);
    assert!(ev.succeeded(), "{ev:#?}");
    let work = s.env.path("forged-deb");
    fs::create_dir_all(&work).unwrap();
    dearmor(&s.download(o, "deb-near/members.bin.asc"), &work.join("_gpgorigin"));
    rejects("verify_deb", &[&cert, &with_origin(&deb_path, &work)]);
    // Control: the same assembly with a genuine origin signature (made by the `deb` format
    // with another key) passes, so the rejection above is the signature's doing.
    let pkgs = s.env.generate("pkgs", "ed25519");
    let control = s.env.path("control-deb");
    ok(s.env.signet().args(["sign", "--key", "pkgs", "--out"]).arg(&control).arg(&deb_path));
    ok(Command::new("ar").current_dir(&control).args(["x", "hello_1.0_all.deb", "_gpgorigin"]));
    accepts("verify_deb", &[&pkgs, &with_origin(&deb_path, &control)]);

    // APT: the exact Release is refused (also with CRLF line ends, as InRelease's
    // canonical text) ...
    let release = fs::read(fx.join("apt/Release")).unwrap();
    refused(&detached_job(&s, "release-exact", "Release", &release), "release-exact");
    let crlf = String::from_utf8(release.clone()).unwrap().replace('\n', "\r\n");
    refused(&detached_job(&s, "release-crlf", "Release", crlf.as_bytes()), "release-crlf");
    // ... and a signature over the nearest thing signet signs is not a Release.gpg apt takes.
    let mut near = release.clone();
    near.push(0);
    let ev = detached_job(&s, "release-near", "Release", &near);
    assert!(ev.succeeded(), "{ev:#?}");
    let repo = s.env.path("forged-repo");
    ok(Command::new("cp").arg("-r").arg(fx.join("apt")).arg(&repo));
    let _ = fs::remove_file(repo.join("InRelease"));
    fs::copy(s.download(o, "release-near/Release.asc"), repo.join("Release.gpg")).unwrap();
    rejects("verify_gpg", &[&cert, &repo.join("Release.gpg"), &repo.join("Release")]);
    rejects("verify_apt_repo", &[&cert, &repo]);
    // Control: the same repository with a genuine Release.gpg passes.
    let control = s.env.path("control-release");
    ok(s.env
        .signet()
        .args(["sign", "--key", "pkgs", "--format", "apt-release", "--out"])
        .arg(&control)
        .arg(repo.join("Release")));
    fs::copy(control.join("Release.gpg"), repo.join("Release.gpg")).unwrap();
    accepts("verify_apt_repo", &[&pkgs, &repo]);

    // RPM: the header structure (what rpmkeys checks a header signature against) is refused.
    let rpm = fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap();
    refused(&detached_job(&s, "rpm-header", "header.bin", &rpm_header(&rpm)), "rpm-header");

    // Nothing was written for the refused jobs.
    for id in ["deb-exact", "release-exact", "release-crlf", "rpm-header"] {
        assert!(s.output_keys(&format!("{id}/")).is_empty(), "{id}: outputs written");
    }
}

#[test]
fn a_worker_refuses_a_policy_that_mixes_detached_and_package_formats() {
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    let policy = s.write_policy(
        "mixed.toml",
        "[keys.release]\nproducers = [\"ci\"]\nsources = [\"in/*\"]\noutputs = [\"out/*\"]\nformats = [\"rpm\", \"detached\"]\n",
    );
    let msg = fails(s.signet().arg("worker").env("SIGNET_POLICY", &policy).env("SIGNET_AUDIT", &s.audit));
    assert!(msg.contains("mixed.toml") && msg.contains("allow_mixed_formats"), "{msg}");
}
