//! `signet keys` + `signet sign` + `signet verify`, checked by the real verifiers:
//! rpmkeys, debsig-verify, gpg, sqv, apt-get and sha256sum.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// Signs every fixture kind with a fresh key of `algo` and checks each output with the
/// ecosystem's own verifier, then checks that tampered copies are refused.
fn every_output_passes_the_real_verifiers(algo: &str) {
    let env = Env::new();
    let cert = env.generate("release", algo);
    let fx = env.fixtures();
    let out = env.path("out");

    let rpms = [fx.join("rpm/hello-1.0-1.noarch.rpm"), fx.join("rpm/world-2.0-1.noarch.rpm")];
    let debs =
        [fx.join("deb/hello_1.0_all.deb"), fx.join("deb/hello-gz_1.0_all.deb"), fx.join("deb/hello-zst_1.0_all.deb")];
    let mut sign = env.signet();
    sign.args(["sign", "--key", "release", "--out"]).arg(&out).args(&rpms).args(&debs);
    sign.arg(fx.join("files/hello-1.0.tar.gz")).arg(fx.join("rpmrepo/repodata/repomd.xml"));
    ok(&mut sign);

    // RPMs: rpmkeys reports the V4 header signature OK; one flipped byte breaks it.
    for rpm in &rpms {
        let signed = out.join(rpm.file_name().unwrap());
        accepts("verify_rpm", &[&cert, &signed]);
        let bad = tampered(&signed, &env.path("tampered.rpm"), -1);
        rejects("verify_rpm", &[&cert, &bad]);
    }
    // The original, unsigned RPM is not accepted (rpmkeys alone would exit 0 for it).
    rejects("verify_rpm", &[&cert, &rpms[0]]);

    // DEBs (xz, gzip, zstd members): debsig-verify with a policy for this key.
    for deb in &debs {
        let signed = out.join(deb.file_name().unwrap());
        accepts("verify_deb", &[&cert, &signed]);
        let bad = tampered(&signed, &env.path("tampered.deb"), 200);
        rejects("verify_deb", &[&cert, &bad]);
    }
    rejects("verify_deb", &[&cert, &debs[0]]);

    // Detached signatures and SHA256SUMS: gpg and sqv.
    for name in ["hello-1.0.tar.gz", "repomd.xml", "SHA256SUMS", "manifest.json"] {
        let data = out.join(name);
        let sig = out.join(format!("{name}.asc"));
        accepts("verify_gpg", &[&cert, &sig, &data]);
        accepts("verify_sqv", &[&cert, &sig, &data]);
        let bad = tampered(&data, &env.path("tampered.data"), 0);
        rejects("verify_gpg", &[&cert, &sig, &bad]);
        rejects("verify_sqv", &[&cert, &sig, &bad]);
    }
    accepts("verify_sha256sums", &[&out]);

    // The sums list every output, and nothing else.
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let mut listed: Vec<&str> = sums.lines().map(|l| l.split_once("  ").unwrap().1).collect();
    listed.sort();
    let mut expected: Vec<String> = listing(&out)
        .into_iter()
        .filter(|n| !["SHA256SUMS", "SHA256SUMS.asc", "manifest.json", "manifest.json.asc"].contains(&n.as_str()))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);

    // The manifest names the key and every input and output with digests.
    let m: serde_json::Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let fpr = ok(env.signet().args(["keys", "list", "--json"]));
    let fpr: serde_json::Value = serde_json::from_str(fpr.lines().next().unwrap()).unwrap();
    assert_eq!(m["key"]["name"], "release");
    assert_eq!(m["key"]["fingerprint"], fpr["fingerprint"]);
    assert_eq!(m["artifacts"].as_array().unwrap().len(), 7);
    for a in m["artifacts"].as_array().unwrap() {
        assert_eq!(a["input"]["sha256"].as_str().unwrap().len(), 64);
        for o in a["outputs"].as_array().unwrap() {
            let (sha, size) = digest(&out.join(o["name"].as_str().unwrap()));
            assert_eq!(o["sha256"].as_str().unwrap(), sha);
            assert_eq!(o["size"].as_u64().unwrap(), size);
        }
    }
    assert_eq!(m["artifacts"][0]["format"], "rpm");
    assert_eq!(m["artifacts"][2]["format"], "deb");
    assert_eq!(m["artifacts"][5]["format"], "detached");

    // signet's own verifier agrees, and names the file that fails.
    let mut v = env.signet();
    v.arg("verify").arg("--cert").arg(&cert);
    for n in listing(&out) {
        v.arg(out.join(n));
    }
    ok(&mut v);
    let bad = tampered(&out.join("hello-1.0-1.noarch.rpm"), &env.path("bad-hello.rpm"), -1);
    let msg = fails(env.signet().arg("verify").arg("--cert").arg(&cert).arg(&bad));
    assert!(msg.contains("bad-hello.rpm") && msg.contains("payload digest"), "{msg}");
}

#[test]
fn rsa4096_outputs_pass_every_real_verifier() {
    every_output_passes_the_real_verifiers("rsa4096");
}

#[test]
fn ed25519_outputs_pass_every_real_verifier() {
    every_output_passes_the_real_verifiers("ed25519");
}

/// A flat APT repository whose Release signet signed is accepted by `apt-get update`, and
/// refused once InRelease is tampered with.
#[test]
fn apt_accepts_a_repository_signed_by_signet() {
    let env = Env::new();
    let cert = env.generate("archive", "ed25519");
    let fx = env.fixtures();
    let repo = fx.join("apt");
    let out = env.path("release-out");
    ok(env
        .signet()
        .args(["sign", "--key", "archive", "--format", "apt-release", "--out"])
        .arg(&out)
        .arg(repo.join("Release")));
    for f in ["InRelease", "Release.gpg"] {
        fs::copy(out.join(f), repo.join(f)).unwrap();
    }
    accepts("verify_gpg", &[&cert, &repo.join("InRelease")]);
    accepts("verify_gpg", &[&cert, &repo.join("Release.gpg"), &repo.join("Release")]);
    accepts("verify_sqv", &[&cert, &repo.join("Release.gpg"), &repo.join("Release")]);
    accepts("verify_apt_repo", &[&cert, &repo]);

    // Another key's cert is not trusted.
    let other = env.generate("other", "ed25519");
    rejects("verify_apt_repo", &[&other, &repo]);

    // Tamper with the signed text inside InRelease (change a letter of the Origin value).
    let inrel = fs::read_to_string(repo.join("InRelease")).unwrap();
    let at = inrel.find("Origin: ").expect("Origin field") + "Origin: ".len();
    let mut bytes = inrel.into_bytes();
    bytes[at] ^= 0x20;
    fs::write(repo.join("InRelease"), &bytes).unwrap();
    fs::remove_file(repo.join("Release.gpg")).unwrap();
    rejects("verify_apt_repo", &[&cert, &repo]);
    rejects("verify_gpg", &[&cert, &repo.join("InRelease")]);
}

/// Keys made by GnuPG and imported with `signet keys import` sign the same way.
#[test]
fn keys_imported_from_gpg_sign_rpm_deb_and_detached() {
    for algo in ["rsa4096", "ed25519"] {
        let env = Env::new();
        let gnupg = env.path("gnupg");
        fs::create_dir_all(&gnupg).unwrap();
        let (key_type, extra) =
            if algo == "rsa4096" { ("RSA", "Key-Length: 4096\n") } else { ("EDDSA", "Key-Curve: ed25519\n") };
        let params = format!(
            "%no-protection\nKey-Type: {key_type}\n{extra}Key-Usage: sign\nName-Real: GPG Made\nName-Email: gpg@example.org\nExpire-Date: 0\n%commit\n"
        );
        fs::write(env.path("params"), params).unwrap();
        ok(Command::new("gpg").env("GNUPGHOME", &gnupg).args(["--batch", "--gen-key"]).arg(env.path("params")));
        let secret = run(Command::new("gpg").env("GNUPGHOME", &gnupg).args([
            "--armor",
            "--export-secret-keys",
            "gpg@example.org",
        ]));
        assert!(secret.status.success());
        fs::write(env.path("secret.asc"), &secret.stdout).unwrap();
        ok(env.signet().args(["keys", "import", "imported"]).arg(env.path("secret.asc")));
        let cert = env.export("imported");

        let fx = env.fixtures();
        let out = env.path("out");
        ok(env
            .signet()
            .args(["sign", "--key", "imported", "--out"])
            .arg(&out)
            .arg(fx.join("rpm/hello-1.0-1.noarch.rpm"))
            .arg(fx.join("deb/hello_1.0_all.deb"))
            .arg(fx.join("files/hello-1.0.tar.gz")));
        accepts("verify_rpm", &[&cert, &out.join("hello-1.0-1.noarch.rpm")]);
        accepts("verify_deb", &[&cert, &out.join("hello_1.0_all.deb")]);
        accepts("verify_gpg", &[&cert, &out.join("hello-1.0.tar.gz.asc"), &out.join("hello-1.0.tar.gz")]);
        accepts("verify_sha256sums", &[&out]);
    }
}

/// An RPM already signed by another key (rpmsign + GnuPG) ends up verifying with signet's
/// key alone, and the manifest records the replaced signature.
fn digest(path: &Path) -> (String, u64) {
    use sha2::{Digest, Sha256};
    let b = fs::read(path).unwrap();
    (hex::encode(Sha256::digest(&b)), b.len() as u64)
}

#[test]
fn a_batch_signed_on_several_threads_keeps_its_order_and_fails_whole() {
    let env = Env::new();
    let cert = env.generate("release", "ed25519");
    let fx = env.fixtures();
    // Sixteen artifacts of every kind, interleaved so that the threads finish out of order.
    let mut files = Vec::new();
    for i in 0..4 {
        for (src, name) in [
            ("rpm/hello-1.0-1.noarch.rpm", format!("hello-{i}.rpm")),
            ("deb/hello_1.0_all.deb", format!("hello-{i}.deb")),
            ("files/hello-1.0.tar.gz", format!("hello-{i}.tar.gz")),
            ("rpmrepo/repodata/repomd.xml", format!("repomd-{i}.xml")),
        ] {
            let p = env.path(&format!("in/{name}"));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::copy(fx.join(src), &p).unwrap();
            files.push(p);
        }
    }
    let out = env.path("out");
    ok(env.signet().args(["sign", "--key", "release", "--threads", "4", "--out"]).arg(&out).args(&files));
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let order: Vec<&str> =
        manifest["artifacts"].as_array().unwrap().iter().map(|a| a["input"]["name"].as_str().unwrap()).collect();
    let want: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(order, want, "the manifest does not list the artifacts in the order given");
    accepts("verify_sha256sums", &[&out]);
    for i in 0..4 {
        accepts("verify_rpm", &[&cert, &out.join(format!("hello-{i}.rpm"))]);
        accepts("verify_deb", &[&cert, &out.join(format!("hello-{i}.deb"))]);
        accepts(
            "verify_gpg",
            &[&cert, &out.join(format!("hello-{i}.tar.gz.asc")), &out.join(format!("hello-{i}.tar.gz"))],
        );
    }

    // One corrupt RPM in the middle fails the whole batch, naming it, and leaves nothing.
    let bad = env.path("in/hello-2.rpm");
    let mut bytes = fs::read(&bad).unwrap();
    bytes.truncate(200);
    fs::write(&bad, bytes).unwrap();
    let out2 = env.path("out2");
    let err = fails(env.signet().args(["sign", "--key", "release", "--threads", "4", "--out"]).arg(&out2).args(&files));
    assert!(err.contains("hello-2.rpm"), "{err}");
    assert!(listing(&out2).is_empty(), "a failed batch left {:?}", listing(&out2));
}

/// Makes one RPM with a `size`-byte payload, with rpm's reserved signature space set to
/// `reserved` bytes (None: rpm's default, 4096).
fn sized_rpm(env: &Env, dir: &str, name: &str, size: u64, reserved: Option<u64>) -> std::path::PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/support/fixtures.sh")).arg("rpm").arg(env.path(dir)).args([name, &size.to_string()]);
    if let Some(r) = reserved {
        cmd.env("FIXTURE_RPM_RESERVED_SPACE", r.to_string());
    }
    ok(&mut cmd);
    env.path(dir).join(format!("{name}-1.0-1.noarch.rpm"))
}

#[test]
fn in_place_rewrites_only_the_signature_header_or_replaces_the_file_whole() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let cert = env.generate("k", "ed25519");
    let size = 8 * 1024 * 1024;
    // rpm's default 4 KiB of reserved space: the new header fits where the old one was.
    let roomy_src = sized_rpm(&env, "fx1", "roomy", size, None);
    // 32 bytes of reserved space (what rpm leaves with 0): no room for a signature.
    let tight_src = sized_rpm(&env, "fx2", "tight", size, Some(0));
    let pkgs = env.path("pkgs");
    fs::create_dir_all(&pkgs).unwrap();
    let (roomy, tight) = (pkgs.join("roomy-1.0-1.noarch.rpm"), pkgs.join("tight-1.0-1.noarch.rpm"));
    fs::copy(&roomy_src, &roomy).unwrap();
    fs::copy(&tight_src, &tight).unwrap();
    let (roomy_before, tight_before) = (fs::read(&roomy).unwrap(), fs::read(&tight).unwrap());
    let (roomy_ino, tight_ino) = (fs::metadata(&roomy).unwrap().ino(), fs::metadata(&tight).unwrap().ino());

    let out = env.path("out");
    ok(env.signet().args(["sign", "--in-place", "--key", "k", "--out"]).arg(&out).arg(&roomy).arg(&tight));

    // Both packages are signed where they are and pass rpmkeys; --out holds only the batch files.
    accepts("verify_rpm", &[&cert, &roomy]);
    accepts("verify_rpm", &[&cert, &tight]);
    assert_eq!(listing(&out), ["SHA256SUMS", "SHA256SUMS.asc", "manifest.json", "manifest.json.asc"]);
    // The roomy one was rewritten in place (same file), only within its lead and signature header.
    let roomy_after = fs::read(&roomy).unwrap();
    assert_eq!(fs::metadata(&roomy).unwrap().ino(), roomy_ino, "the roomy package was not signed in place");
    assert_eq!(roomy_after.len(), roomy_before.len());
    let last_change = (0..roomy_after.len()).rev().find(|&i| roomy_after[i] != roomy_before[i]).unwrap();
    assert!(last_change < 96 + 8 * 1024, "byte {last_change} changed, past the signature header");
    // The tight one was replaced by a signed copy: a new file, same payload, same mode.
    let tight_after = fs::read(&tight).unwrap();
    assert_ne!(fs::metadata(&tight).unwrap().ino(), tight_ino, "the tight package cannot have been signed in place");
    assert!(tight_after.ends_with(&tight_before[tight_before.len() - size as usize..]));
    assert_eq!(fs::metadata(&tight).unwrap().mode() & 0o777, fs::metadata(&tight_src).unwrap().mode() & 0o777);
    assert!(listing(&pkgs).len() == 2, "a temporary file was left beside the packages: {:?}", listing(&pkgs));

    // SHA256SUMS names the packages as they are now, and the manifest their digests before.
    ok(Command::new("sha256sum").arg("-c").arg(out.join("SHA256SUMS")).current_dir(&pkgs));
    accepts("verify_gpg", &[&cert, &out.join("SHA256SUMS.asc"), &out.join("SHA256SUMS")]);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    use sha2::{Digest, Sha256};
    assert_eq!(m["artifacts"][0]["input"]["sha256"], hex::encode(Sha256::digest(&roomy_before)));
    assert_eq!(m["artifacts"][1]["input"]["sha256"], hex::encode(Sha256::digest(&tight_before)));
    assert_eq!(m["artifacts"][0]["outputs"][0]["sha256"], hex::encode(Sha256::digest(&roomy_after)));

    // A package whose payload was damaged is refused and left exactly as it was.
    let bad = tampered(&roomy_src, &pkgs.join("bad-1.0-1.noarch.rpm"), -100);
    let bad_before = fs::read(&bad).unwrap();
    let err = fails(env.signet().args(["sign", "--in-place", "--key", "k", "--out"]).arg(env.path("out2")).arg(&bad));
    assert!(err.contains("payload digest mismatch"), "{err}");
    assert_eq!(fs::read(&bad).unwrap(), bad_before, "a refused package was modified");
    // --in-place is for RPMs.
    let fx = env.fixtures();
    let err = fails(
        env.signet()
            .args(["sign", "--in-place", "--key", "k", "--out"])
            .arg(env.path("out3"))
            .arg(fx.join("deb/hello_1.0_all.deb")),
    );
    assert!(err.contains("--in-place signs RPMs only"), "{err}");
}
