//! The publish gate (`signet verify --require-signed`) and the consumer trust kit
//! (`signet keys export --format keyring|debsig|dnf`), checked by apt-get, debsig-verify
//! and dnf themselves.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `signet verify --require-signed` on `dir` with trusted `cert`: (exit code, stdout).
fn gate(env: &Env, cert: &Path, dir: &Path) -> (i32, String) {
    let o = run(env.signet().args(["verify", "--require-signed", "--cert"]).arg(cert).arg(dir));
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The line the gate printed for `name`.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines().find(|l| l.contains(&format!("/{name}:"))).unwrap_or_else(|| panic!("no line for {name} in:\n{out}"))
}

#[test]
fn the_gate_refuses_unsigned_foreign_and_tampered_packages_and_passes_what_signet_signed() {
    let env = Env::new();
    let cert = env.generate("release", "ed25519");
    env.generate("other", "ed25519");
    let fx = env.fixtures();
    let signed = env.path("signed");
    ok(env
        .signet()
        .args(["sign", "--key", "release", "--out"])
        .arg(&signed)
        .arg(fx.join("rpm/hello-1.0-1.noarch.rpm"))
        .arg(fx.join("deb/hello_1.0_all.deb"))
        .arg(fx.join("files/hello-1.0.tar.gz")));

    // What signet signed passes: both packages, the tarball's .asc, SHA256SUMS and the
    // manifest's signature.
    let (code, out) = gate(&env, &cert, &signed);
    assert_eq!(code, 0, "{out}");
    for name in ["hello-1.0-1.noarch.rpm", "hello_1.0_all.deb", "hello-1.0.tar.gz", "SHA256SUMS", "manifest.json"] {
        assert!(line(&out, name).starts_with("OK "), "{out}");
    }

    // The same directory with one unsigned RPM, one RPM signed by another key and a
    // tampered DEB: each is named, with why.
    let bad = env.path("bad");
    copy_dir(&signed, &bad);
    fs::copy(fx.join("rpm/world-2.0-1.noarch.rpm"), bad.join("world-2.0-1.noarch.rpm")).unwrap();
    let foreign = env.path("foreign");
    ok(env.signet().args(["sign", "--key", "other", "--out"]).arg(&foreign).arg(fx.join("rpm/hello-1.0-1.noarch.rpm")));
    fs::copy(foreign.join("hello-1.0-1.noarch.rpm"), bad.join("foreign-1.0-1.noarch.rpm")).unwrap();
    // A byte of data.tar flipped: 100 bytes before the `_gpgorigin` member's header is
    // inside the last signed member.
    let deb = fs::read(bad.join("hello_1.0_all.deb")).unwrap();
    let origin = deb.windows(10).position(|w| w == b"_gpgorigin").expect("signed DEB");
    tampered(&bad.join("hello_1.0_all.deb"), &bad.join("hello_1.0_all.deb"), origin as i64 - 100);
    let (code, out) = gate(&env, &cert, &bad);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "world-2.0-1.noarch.rpm").starts_with("UNSIGNED "), "{out}");
    let foreign_line = line(&out, "foreign-1.0-1.noarch.rpm");
    assert!(foreign_line.starts_with("NOT-ALLOWED ") && foreign_line.contains("does not allow"), "{out}");
    assert!(line(&out, "hello_1.0_all.deb").starts_with("BAD "), "{out}");
    // SHA256SUMS no longer matches the tampered DEB either; the rest still passes.
    assert!(line(&out, "SHA256SUMS").starts_with("BAD "), "{out}");
    assert!(line(&out, "hello-1.0-1.noarch.rpm").starts_with("OK "), "{out}");

    // Trusting the other key instead refuses what release signed, as not allowed.
    let other_cert = env.export("other");
    let (code, out) = gate(&env, &other_cert, &signed);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "hello-1.0-1.noarch.rpm").starts_with("NOT-ALLOWED "), "{out}");

    // Unsigned repository metadata is refused; nothing to check is refused too.
    let repo = env.path("rpmrepo");
    copy_dir(&fx.join("rpmrepo"), &repo);
    copy_dir(&fx.join("rpmrepo/repodata"), &repo.join("repodata"));
    let (code, out) = gate(&env, &cert, &repo);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "repomd.xml").starts_with("UNSIGNED "), "{out}");
    let empty = env.path("empty");
    fs::create_dir_all(&empty).unwrap();
    fs::write(empty.join("README"), "nothing signed here\n").unwrap();
    let (code, out) = gate(&env, &cert, &empty);
    assert_eq!(code, 1, "an empty set passed:\n{out}");
    assert!(out.contains("EMPTY"), "{out}");
}

#[test]
fn the_trust_kit_is_what_apt_debsig_verify_and_dnf_take() {
    let env = Env::new();
    let cert = env.generate("release", "ed25519");
    let fx = env.fixtures();
    let fpr = ok(env.signet().args(["keys", "list", "--json"]));
    let fpr: serde_json::Value = serde_json::from_str(fpr.lines().next().unwrap()).unwrap();
    let fpr = fpr["fingerprint"].as_str().unwrap().to_owned();
    let grouped = signet::approval::grouped_fingerprint(&fpr);
    assert_eq!(grouped.len(), 50, "{grouped}");
    assert!(ok(env.signet().args(["keys", "list"])).contains(&grouped));

    // keyring: apt's signed-by takes it as it is.
    let ring = env.path("release.gpg");
    let o = run(env.signet().args(["keys", "export", "release", "--format", "keyring", "--out"]).arg(&ring));
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&grouped), "the export must show the fingerprint");
    let apt = fx.join("apt");
    let out = env.path("release-out");
    ok(env
        .signet()
        .args(["sign", "--key", "release", "--format", "apt-release", "--out"])
        .arg(&out)
        .arg(apt.join("Release")));
    fs::copy(out.join("InRelease"), apt.join("InRelease")).unwrap();
    accepts("verify_apt_repo", &[&ring, &apt]);
    // The gate: a Release beside InRelease (no Release.gpg) must be the text it signs.
    // (The fixture's DEB in it is unsigned: only the Release line matters here.)
    let (_, out_text) = gate(&env, &ring, &apt);
    assert!(line(&out_text, "Release").starts_with("OK "), "{out_text}");
    assert!(line(&out_text, "InRelease").starts_with("OK "), "{out_text}");
    let release = fs::read_to_string(apt.join("Release")).unwrap();
    fs::write(apt.join("Release"), release.replace("Origin: Signet", "Origin: Evil")).unwrap();
    let (code, out_text) = gate(&env, &ring, &apt);
    assert_eq!(code, 1, "{out_text}");
    assert!(line(&out_text, "Release").starts_with("BAD "), "{out_text}");
    fs::write(apt.join("Release"), release).unwrap();

    // debsig: debsig-verify with nothing but the kit's two directories.
    let kit = env.path("debsig");
    ok(env.signet().args(["keys", "export", "release", "--format", "debsig", "--out"]).arg(&kit));
    let signed = env.path("signed");
    ok(env.signet().args(["sign", "--key", "release", "--out"]).arg(&signed).arg(fx.join("deb/hello_1.0_all.deb")));
    let debsig = |deb: &Path| {
        run(Command::new("debsig-verify")
            .arg("--policies-dir")
            .arg(kit.join("policies"))
            .arg("--keyrings-dir")
            .arg(kit.join("keyrings"))
            .arg(deb))
    };
    let o = debsig(&signed.join("hello_1.0_all.deb"));
    assert!(o.status.success(), "debsig-verify refused a signet-signed DEB with the kit:\n{}", text(&o));
    env.generate("other", "ed25519");
    let foreign = env.path("foreign");
    ok(env.signet().args(["sign", "--key", "other", "--out"]).arg(&foreign).arg(fx.join("deb/hello_1.0_all.deb")));
    assert!(!debsig(&foreign.join("hello_1.0_all.deb")).status.success(), "the kit trusted another key");

    // dnf: a repository of signet-signed RPMs with a signed repomd.xml installs with the
    // kit's .repo file (gpgcheck=1, repo_gpgcheck=1) and refuses an unsigned package.
    let make_repo = |name: &str, rpms: &[&Path]| {
        let repo = env.path(name);
        fs::create_dir_all(&repo).unwrap();
        for r in rpms {
            fs::copy(r, repo.join(r.file_name().unwrap())).unwrap();
        }
        ok(Command::new("createrepo_c").arg("--quiet").arg(&repo));
        let md = env.path(&format!("{name}-md"));
        ok(env
            .signet()
            .args(["sign", "--key", "release", "--format", "detached", "--out"])
            .arg(&md)
            .arg(repo.join("repodata/repomd.xml")));
        fs::copy(md.join("repomd.xml.asc"), repo.join("repodata/repomd.xml.asc")).unwrap();
        repo
    };
    let rpms = env.path("rpms");
    ok(env.signet().args(["sign", "--key", "release", "--out"]).arg(&rpms).arg(fx.join("rpm/hello-1.0-1.noarch.rpm")));
    let kit_for = |name: &str, repo: &Path| {
        let dir = env.path(&format!("{name}-kit"));
        ok(env
            .signet()
            .args(["keys", "export", "release", "--format", "dnf", "--out"])
            .arg(&dir)
            .arg("--baseurl")
            .arg(format!("file://{}", repo.display()))
            .arg("--gpgkey-url")
            .arg(format!("file://{}/RPM-GPG-KEY-release", dir.display())));
        let text = fs::read_to_string(dir.join("release.repo")).unwrap();
        assert!(text.contains("gpgcheck=1") && text.contains("repo_gpgcheck=1") && text.contains(&grouped), "{text}");
        dir
    };
    let good = make_repo("good-repo", &[&rpms.join("hello-1.0-1.noarch.rpm")]);
    accepts("verify_dnf_repo", &[&kit_for("good", &good), Path::new("hello")]);
    let mixed =
        make_repo("mixed-repo", &[&rpms.join("hello-1.0-1.noarch.rpm"), &fx.join("rpm/world-2.0-1.noarch.rpm")]);
    let refused = |kit: &Path, pkg: &str| {
        let o = verifier("verify_dnf_repo", &[kit, Path::new(pkg)]);
        let t = text(&o);
        // dnf must refuse for the signature, not for some other trouble.
        assert!(!o.status.success() && (t.contains("GPG") || t.contains("signature")), "{t}");
    };
    refused(&kit_for("mixed", &mixed), "world");
    // The same repository whose repomd.xml.asc is another key's: repo_gpgcheck refuses it.
    let other_md = env.path("other-md");
    ok(env
        .signet()
        .args(["sign", "--key", "other", "--format", "detached", "--out"])
        .arg(&other_md)
        .arg(good.join("repodata/repomd.xml")));
    fs::copy(other_md.join("repomd.xml.asc"), good.join("repodata/repomd.xml.asc")).unwrap();
    refused(&kit_for("good2", &good), "hello");
    let _ = cert;
}
