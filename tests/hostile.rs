//! The hostile-input table: crafted packages, files, job messages and objects, each with
//! the outcome a producer must see. Every file case goes through `signet sign` (a clear
//! error, exit 1, nothing written) and through a real worker (exactly one `job.failed`
//! with the expected code, the message dead-lettered, nothing under its output prefix);
//! at the end the worker is still running, its peak memory is bounded and a good job
//! still succeeds.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use common::stack::Stack;
use common::*;
use serde_json::json;

/// How a case's artifact is submitted and what must happen.
struct Case {
    id: String,
    /// The artifact's bytes and name, or None for a raw job message case.
    file: Option<(String, Vec<u8>)>,
    format: &'static str,
    /// Raw message body (message cases).
    body: Option<Vec<u8>>,
    /// Expected failure code in the worker's event.
    code: &'static str,
    /// Text the CLI's error (and the event's message) must contain.
    needle: &'static str,
    /// The sha256 the job declares (checksum cases).
    sha256: Option<String>,
}

fn file_case(id: &str, name: &str, bytes: Vec<u8>, format: &'static str, needle: &'static str) -> Case {
    Case {
        id: id.into(),
        file: Some((name.into(), bytes)),
        format,
        body: None,
        code: "invalid_artifact",
        needle,
        sha256: None,
    }
}

fn message_case(id: &str, body: Vec<u8>, needle: &'static str) -> Case {
    Case { id: id.into(), file: None, format: "auto", body: Some(body), code: "invalid_job", needle, sha256: None }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Offsets of an RPM's two header structures.
struct Layout {
    sig: usize,
    sig_store: usize,
    sig_dl: usize,
    hdr: usize,
    hdr_store: usize,
    hdr_dl: usize,
    end_of_header: usize,
}

impl Layout {
    fn of(b: &[u8]) -> Layout {
        let sig = 96;
        let (il, dl) = (be32(b, sig + 8) as usize, be32(b, sig + 12) as usize);
        let sig_store = sig + 16 + il * 16;
        let sig_end = sig_store + dl;
        let hdr = sig_end + (8 - sig_end % 8) % 8;
        let (hil, hdl) = (be32(b, hdr + 8) as usize, be32(b, hdr + 12) as usize);
        let hdr_store = hdr + 16 + hil * 16;
        Layout { sig, sig_store, sig_dl: dl, hdr, hdr_store, hdr_dl: hdl, end_of_header: hdr_store + hdl }
    }

    /// Offset of index entry `i` of the header structure at `base`.
    fn entry(base: usize, i: usize) -> usize {
        base + 16 + i * 16
    }

    /// Index of the first entry with `tag` in the structure at `base`.
    fn find(b: &[u8], base: usize, tag: u32) -> usize {
        let n = be32(b, base + 8) as usize;
        (0..n).find(|&i| be32(b, Self::entry(base, i)) == tag).unwrap_or_else(|| panic!("tag {tag} not in fixture"))
    }
}

/// One ar member: (name field as written, declared size, data).
fn ar(members: &[(&str, String, &[u8])]) -> Vec<u8> {
    let mut a = b"!<arch>\n".to_vec();
    for (name, size, data) in members {
        let mut h = [b' '; 60];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[16] = b'0';
        h[28] = b'0';
        h[34] = b'0';
        h[40..46].copy_from_slice(b"100644");
        h[48..48 + size.len()].copy_from_slice(size.as_bytes());
        h[58..].copy_from_slice(b"`\n");
        a.extend(h);
        a.extend_from_slice(data);
        if data.len() % 2 == 1 {
            a.push(b'\n');
        }
    }
    a
}

fn cases(fx: &Path) -> Vec<Case> {
    let rpm = fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap();
    let deb = fs::read(fx.join("deb/hello_1.0_all.deb")).unwrap();
    let release = fs::read(fx.join("apt/Release")).unwrap();
    let l = Layout::of(&rpm);
    let m = ar_members(&deb);
    let (db, ctl, data) = (&m[0], &m[1], &m[2]);
    assert_eq!(db.0, "debian-binary");
    let mut v = Vec::new();

    // --- RPM: index entries and lengths that lie (format rpm).
    let mut rpm_case = |id: &str, patch: &dyn Fn(&mut Vec<u8>), needle: &'static str| {
        let mut b = rpm.clone();
        patch(&mut b);
        v.push(file_case(id, &format!("{id}.rpm"), b, "rpm", needle));
    };
    let e0 = Layout::entry(l.sig, 0);
    rpm_case(
        "rpm-int64-count-2e32",
        &|b| {
            put32(b, e0 + 4, 5);
            put32(b, e0 + 8, 0);
            put32(b, e0 + 12, u32::MAX);
        },
        "corrupt RPM",
    );
    rpm_case("rpm-sig-index-count-huge", &|b| put32(b, l.sig + 8, 0x7fff_ffff), "corrupt RPM");
    rpm_case("rpm-sig-store-huge", &|b| put32(b, l.sig + 12, 0x7fff_ffff), "corrupt RPM");
    rpm_case("rpm-sig-index-count-zero", &|b| put32(b, l.sig + 8, 0), "corrupt RPM");
    rpm_case("rpm-sig-index-count-max", &|b| put32(b, l.sig + 8, 0xffff), "corrupt RPM");
    rpm_case("rpm-hdr-index-count-huge", &|b| put32(b, l.hdr + 8, 0x7fff_ffff), "corrupt RPM");
    rpm_case("rpm-hdr-store-huge", &|b| put32(b, l.hdr + 12, 0x0fff_ffff), "corrupt RPM");
    rpm_case("rpm-sig-offset-outside-store", &|b| put32(b, e0 + 8, l.sig_dl as u32 + 100), "corrupt RPM");
    let h1 = Layout::entry(l.hdr, 1);
    rpm_case("rpm-hdr-offset-outside-store", &|b| put32(b, h1 + 8, l.hdr_dl as u32), "corrupt RPM");
    rpm_case(
        "rpm-int32-count-overflow",
        &|b| {
            put32(b, e0 + 4, 4);
            put32(b, e0 + 8, 0);
            put32(b, e0 + 12, 0x4000_0001);
        },
        "corrupt RPM",
    );
    rpm_case(
        "rpm-string-array-count-absurd",
        &|b| {
            put32(b, h1 + 4, 8);
            put32(b, h1 + 12, l.hdr_dl as u32);
        },
        "corrupt RPM",
    );
    rpm_case("rpm-type-null", &|b| put32(b, e0 + 4, 0), "corrupt RPM");
    rpm_case("rpm-type-unknown", &|b| put32(b, e0 + 4, 99), "corrupt RPM");
    rpm_case("rpm-count-zero", &|b| put32(b, e0 + 12, 0), "corrupt RPM");
    let size_entry = Layout::entry(l.sig, Layout::find(&rpm, l.sig, 1000));
    rpm_case(
        "rpm-int32-misaligned",
        &|b| {
            let off = be32(b, size_entry + 8);
            put32(b, size_entry + 8, off + 1);
        },
        "corrupt RPM",
    );
    let sha_entry = Layout::entry(l.sig, Layout::find(&rpm, l.sig, 273));
    rpm_case(
        "rpm-digest-tag-wrong-type",
        &|b| {
            put32(b, sha_entry + 4, 7);
            put32(b, sha_entry + 12, 4);
        },
        "corrupt RPM",
    );
    let name_entry = Layout::entry(l.hdr, Layout::find(&rpm, l.hdr, 1000));
    rpm_case("rpm-name-tag-wrong-type", &|b| put32(b, name_entry + 4, 7), "corrupt RPM");
    rpm_case("rpm-bad-sig-header-magic", &|b| b[l.sig] = 0, "not an RPM");
    rpm_case("rpm-bad-header-magic", &|b| b[l.hdr + 1] = 0, "not an RPM");
    rpm_case("rpm-bad-lead-magic", &|b| b[0] = 0, "not an RPM");
    rpm_case(
        "rpm-payload-digest-mismatch",
        &|b| {
            let n = b.len();
            b[n - 1] ^= 0xff;
        },
        "payload digest mismatch",
    );
    rpm_case("rpm-payload-truncated", &|b| b.truncate(b.len() - 64), "corrupt or truncated RPM");
    rpm_case("rpm-garbage-after-payload", &|b| b.extend_from_slice(b"trailing"), "corrupt or truncated RPM");
    rpm_case(
        "rpm-header-digest-mismatch",
        &|b| {
            let marker = b"SIGNET-FIXTURE-DESCRIPTION";
            let at = b.windows(marker.len()).position(|w| w == marker).expect("marker");
            b[at + 2] ^= 0x20;
        },
        "digest mismatch",
    );
    rpm_case("rpm-lead-only", &|b| b.truncate(96), "truncated RPM");
    rpm_case("rpm-cut-in-signature-index", &|b| b.truncate(l.sig_store - 5), "truncated RPM");
    rpm_case("rpm-cut-in-header-store", &|b| b.truncate(l.hdr_store + 10), "truncated RPM");
    rpm_case("rpm-empty", &|b| b.clear(), "truncated RPM");
    let _ = l.end_of_header;

    // --- DEB: ar archives that lie, names DEBs never use, members missing or doubled.
    let s = |n: usize| n.to_string();
    let (dbn, ctln, datan) = (db.0.as_str(), ctl.0.as_str(), data.0.as_str());
    let good = |extra: Vec<(&'static str, String, &'static [u8])>| {
        let mut ms: Vec<(&str, String, &[u8])> =
            vec![(dbn, s(db.1.len()), &db.1), (ctln, s(ctl.1.len()), &ctl.1), (datan, s(data.1.len()), &data.1)];
        ms.extend(extra);
        ar(&ms)
    };
    let mut deb_case = |id: &str, bytes: Vec<u8>, needle: &'static str| {
        v.push(file_case(id, &format!("{id}.deb"), bytes, "deb", needle));
    };
    deb_case("deb-gnu-long-name-ref", good(vec![("/999", s(2), b"ab")]), "extended-name");
    deb_case("deb-gnu-name-table", good(vec![("//", s(2), b"ab")]), "extended-name");
    deb_case("deb-bsd-long-name", good(vec![("#1/20", s(2), b"ab")]), "extended-name");
    deb_case("deb-symbol-table", good(vec![("/", s(2), b"ab")]), "extended-name");
    deb_case("deb-name-with-slash", good(vec![("a/b", s(2), b"ab")]), "plain file name");
    deb_case("deb-name-with-space", good(vec![("a b", s(2), b"ab")]), "plain file name");
    deb_case(
        "deb-size-past-end",
        ar(&[(dbn, s(4), &db.1), (ctln, s(ctl.1.len()), &ctl.1), (datan, s(data.1.len() + 5000), &data.1)]),
        "runs past the end",
    );
    deb_case("deb-size-not-decimal", ar(&[(dbn, "4x".into(), &db.1)]), "not a base-10");
    deb_case("deb-size-negative", ar(&[(dbn, "-4".into(), &db.1)]), "not a base-10");
    deb_case("deb-size-huge", ar(&[(dbn, "9999999999".into(), &db.1)]), "limit");
    deb_case(
        "deb-duplicate-control",
        ar(&[
            (dbn, s(4), &db.1),
            (ctln, s(ctl.1.len()), &ctl.1),
            (ctln, s(ctl.1.len()), &ctl.1),
            (datan, s(data.1.len()), &data.1),
        ]),
        "appears twice",
    );
    deb_case("deb-missing-control", ar(&[(dbn, s(4), &db.1), (datan, s(data.1.len()), &data.1)]), "before control.tar");
    deb_case("deb-missing-data", ar(&[(dbn, s(4), &db.1), (ctln, s(ctl.1.len()), &ctl.1)]), "data.tar member missing");
    deb_case(
        "deb-data-before-control",
        ar(&[(dbn, s(4), &db.1), (datan, s(data.1.len()), &data.1), (ctln, s(ctl.1.len()), &ctl.1)]),
        "before control.tar",
    );
    deb_case(
        "deb-debian-binary-not-first",
        ar(&[(ctln, s(ctl.1.len()), &ctl.1), (dbn, s(4), &db.1), (datan, s(data.1.len()), &data.1)]),
        "first member",
    );
    deb_case(
        "deb-version-3",
        ar(&[(dbn, s(4), b"3.0\n"), (ctln, s(ctl.1.len()), &ctl.1), (datan, s(data.1.len()), &data.1)]),
        "not a 2.x version",
    );
    let rpm_header = rpm[l.hdr..l.end_of_header].to_vec();
    deb_case(
        "deb-debian-binary-is-rpm-header",
        ar(&[
            (dbn, s(rpm_header.len()), &rpm_header),
            (ctln, s(ctl.1.len()), &ctl.1),
            (datan, s(data.1.len()), &data.1),
        ]),
        "debian-binary",
    );
    deb_case(
        "deb-debian-binary-large",
        ar(&[(dbn, s(1000), &[b'2'; 1000]), (ctln, s(ctl.1.len()), &ctl.1), (datan, s(data.1.len()), &data.1)]),
        "not a version line",
    );
    let mut no_marker = good(vec![]);
    no_marker[8 + 58] = b'X';
    deb_case("deb-header-end-marker", no_marker, "end marker");
    let mut cut = good(vec![]);
    cut.truncate(8 + 60 + 4 + 30);
    deb_case("deb-cut-in-member-header", cut, "ends inside");
    deb_case(
        "deb-two-signatures",
        good(vec![("_gpgorigin", s(4), b"xxxx"), ("_gpgorigin", s(4), b"xxxx")]),
        "appears twice",
    );
    let big_sig = vec![0u8; 100 * 1024];
    let big_sig: &'static [u8] = Box::leak(big_sig.into_boxed_slice());
    deb_case("deb-signature-member-huge", good(vec![("_gpgorigin", s(big_sig.len()), big_sig)]), "too large");
    let release_ctl = b"Origin: x\nSHA256:\n 0000 1 main/binary-all/Packages\n";
    deb_case(
        "deb-members-read-as-release",
        ar(&[(dbn, s(4), b"2.0\n"), ("control.tar", s(release_ctl.len()), release_ctl), ("data.tar", s(2), b"x\n")]),
        "Release",
    );
    deb_case("deb-not-an-archive", b"hello, not an ar archive".to_vec(), "not an ar archive");
    deb_case("deb-global-header-only", b"!<arch>\n".to_vec(), "member missing");
    let many: Vec<(String, Vec<u8>)> = (0..70).map(|i| (format!("_x{i}"), b"ab".to_vec())).collect();
    let mut ms: Vec<(&str, String, &[u8])> =
        vec![(dbn, s(4), &db.1), (ctln, s(ctl.1.len()), &ctl.1), (datan, s(data.1.len()), &data.1)];
    ms.extend(many.iter().map(|(n, d)| (n.as_str(), s(d.len()), d.as_slice())));
    deb_case("deb-too-many-members", ar(&ms), "more than 64 members");

    // --- Detached signatures over another format's signed data (cross-format forgery).
    let mut concat = db.1.clone();
    concat.extend(&ctl.1);
    concat.extend(&data.1);
    let crlf = String::from_utf8(release.clone()).unwrap().replace('\n', "\r\n").into_bytes();
    for (id, bytes) in [
        ("detached-rpm-header", rpm_header.clone()),
        ("detached-rpm-signature-header", rpm[l.sig..l.sig_store + l.sig_dl].to_vec()),
        ("detached-deb-members", concat.clone()),
        ("detached-release", release.clone()),
        ("detached-release-crlf", crlf),
    ] {
        v.push(file_case(id, &format!("{id}.bin"), bytes, "detached", "refusing a detached signature"));
    }

    // --- APT Release files that are not (only) Release files.
    let mut starts_like_deb = b"2.0\n".to_vec();
    starts_like_deb.extend(&release);
    let mut with_nul = release.clone();
    with_nul.insert(10, 0);
    for (id, bytes, needle) in [
        ("release-starts-like-deb", starts_like_deb, "refusing to sign"),
        ("release-with-nul", with_nul, "refusing to sign"),
        ("release-no-sha256", b"Origin: x\nLabel: y\n".to_vec(), "no SHA256"),
        ("release-not-utf8", b"Origin: \xff\xfe\nSHA256:\n".to_vec(), "not UTF-8"),
        ("release-already-signed", b"-----BEGIN PGP SIGNED MESSAGE-----\nSHA256:\n".to_vec(), "already signed"),
        ("release-no-final-newline", release[..release.len() - 1].to_vec(), "newline"),
    ] {
        v.push(file_case(id, "Release", bytes, "apt-release", needle));
    }

    // --- Job messages.
    let job = |id: &str, key: &str| {
        json!({"job_id": id, "key": "release", "artifacts": [{"bucket": "in-x", "key": key}],
               "output": {"bucket": "out-x", "prefix": format!("{id}/")}})
    };
    let mut huge = job("msg-10mb", "a.rpm");
    huge["padding"] = json!("x".repeat(10 * 1024 * 1024));
    v.push(message_case("msg-10mb", huge.to_string().into_bytes(), "limit"));
    let arts: Vec<_> = (0..10_000).map(|i| json!({"bucket": "in-x", "key": format!("{i}.rpm")})).collect();
    let many = json!({"job_id": "msg-10000-artifacts", "key": "release", "artifacts": arts,
                      "output": {"bucket": "out-x", "prefix": "p/"}});
    v.push(message_case("msg-10000-artifacts", many.to_string().into_bytes(), "at most 1000 artifacts"));
    v.push(message_case(
        "msg-nested",
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        "invalid job",
    ));
    v.push(message_case("msg-not-utf8", b"{\"job_id\": \"\xff\xfe\"}".to_vec(), "invalid job"));
    v.push(message_case("msg-dotdot", job("msg-dotdot", "a/../../etc/x.rpm").to_string().into_bytes(), ".."));
    v.push(message_case("msg-nul-in-key", job("msg-nul-in-key", "a\u{0}b.rpm").to_string().into_bytes(), "control"));
    let long_id = "x".repeat(200);
    v.push(message_case("msg-long-id", job(&long_id, "a.rpm").to_string().into_bytes(), "1-128"));
    v.push(message_case("msg-empty", Vec::new(), "invalid job"));
    v.push(message_case("msg-array", b"[1, 2, 3]".to_vec(), "invalid job"));
    let mut unknown = job("msg-unknown-field", "a.rpm");
    unknown["priority"] = json!(9);
    v.push(message_case("msg-unknown-field", unknown.to_string().into_bytes(), "unknown field"));
    let dup = r#"{"job_id": "msg-duplicate-field", "key": "release", "key": "other",
                  "artifacts": [{"bucket": "in-x", "key": "a.rpm"}], "output": {"bucket": "out-x"}}"#;
    v.push(message_case("msg-duplicate-field", dup.as_bytes().to_vec(), "duplicate field"));
    v.push(message_case(
        "msg-absolute-key",
        job("msg-absolute-key", "/etc/passwd.rpm").to_string().into_bytes(),
        "relative",
    ));
    let mut bad_prefix = job("msg-prefix-dotdot", "a.rpm");
    bad_prefix["output"]["prefix"] = json!("../up/");
    v.push(message_case("msg-prefix-dotdot", bad_prefix.to_string().into_bytes(), ".."));
    v.push(message_case(
        "msg-batch-file-name",
        job("msg-batch-file-name", "x/SHA256SUMS").to_string().into_bytes(),
        "usable file name",
    ));
    v
}

#[test]
fn hostile_inputs_fail_cleanly_in_the_cli_and_the_worker() {
    let s = Stack::new();
    let cert = s.env.generate("release", "ed25519");
    let fx = s.env.fixtures();
    let mut table = cases(&fx);

    // Store cases: the object changed after the producer hashed it; too large; missing.
    let rpm = fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap();
    table.push(Case {
        sha256: Some({
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b"what the producer built"))
        }),
        code: "checksum_mismatch",
        needle: "the job says",
        ..file_case("store-object-changed", "changed.rpm", rpm.clone(), "auto", "")
    });
    table.push(file_case("store-too-large", "big.bin", vec![7u8; 3 * 1024 * 1024], "auto", "limit"));
    let mut missing = file_case("store-missing", "missing.rpm", Vec::new(), "auto", "does not exist");
    missing.code = "artifact_missing";
    table.push(missing);
    assert!(table.len() >= 50, "the table has {} cases", table.len());

    // The CLI: a clear error, exit 1 (never a panic's 101 or an abort's 134), nothing written.
    for c in table.iter().filter(|c| c.file.is_some() && c.code == "invalid_artifact" && !c.id.starts_with("store-")) {
        let (name, bytes) = c.file.as_ref().unwrap();
        let dir = s.env.path(&format!("cli/{}", c.id));
        fs::create_dir_all(&dir).unwrap();
        let input = dir.join(name);
        fs::write(&input, bytes).unwrap();
        let out = dir.join("out");
        let o =
            run(s.env.signet().args(["sign", "--key", "release", "--format", c.format, "--out"]).arg(&out).arg(&input));
        let msg = text(&o);
        assert_eq!(o.status.code(), Some(1), "{}: exit {:?}\n{msg}", c.id, o.status);
        assert!(msg.contains(c.needle), "{}: expected {:?} in:\n{msg}", c.id, c.needle);
        assert!(!msg.contains("panicked"), "{}: {msg}", c.id);
        assert!(listing(&out).is_empty(), "{}: wrote {:?}", c.id, listing(&out));
    }

    // The worker: one job per case.
    let mut w = s.worker(1, &[("SIGNET_MAX_ARTIFACT_BYTES", "2097152"), ("SIGNET_CONCURRENCY", "2")]);
    w.wait_log("worker consuming", 30);
    for c in &table {
        match (&c.file, &c.body) {
            (_, Some(body)) => s.publish_raw(body, &c.id),
            (Some((name, bytes)), None) => {
                let key = format!("hostile/{}/{name}", c.id);
                if c.id != "store-missing" {
                    let p = s.env.path(&format!("upload/{}", c.id));
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    fs::write(&p, bytes).unwrap();
                    s.upload(&key, &p);
                }
                let mut a = json!({"bucket": s.input, "key": key, "format": c.format});
                if let Some(sha) = &c.sha256 {
                    a["sha256"] = json!(sha);
                }
                let job = json!({"job_id": c.id, "key": "release", "artifacts": [a],
                                 "output": {"bucket": s.output, "prefix": format!("{}/", c.id)}});
                s.publish_raw(job.to_string().as_bytes(), &c.id);
            }
            (None, None) => unreachable!(),
        }
    }
    let evs = s.wait_events(240, "one event per hostile case", |evs| {
        table.iter().all(|c| evs.iter().any(|e| e.data.job_id == c.id))
    });
    let mut by_job: HashMap<&str, Vec<_>> = HashMap::new();
    for e in &evs {
        by_job.entry(e.data.job_id.as_str()).or_default().push(e);
    }
    for c in &table {
        let got = by_job.get(c.id.as_str()).cloned().unwrap_or_default();
        assert_eq!(got.len(), 1, "{}: expected exactly one event, got {got:#?}", c.id);
        let err = got[0].data.error.as_ref().unwrap_or_else(|| panic!("{}: not a failure: {:#?}", c.id, got[0]));
        assert_eq!(err.code.as_str(), c.code, "{}: {err:?}", c.id);
        assert!(err.message.contains(c.needle), "{}: expected {:?} in {:?}", c.id, c.needle, err.message);
        assert!(s.output_keys(&format!("{}/", c.id)).is_empty(), "{}: outputs written", c.id);
    }
    let mut dead = s.dead_letters(table.len());
    dead.sort();
    for c in &table {
        assert!(dead.contains(&c.id), "{} was not dead-lettered ({dead:?})", c.id);
    }

    // Still running, memory bounded, and still signing.
    assert!(w.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the worker exited:\n{}", w.log_text());
    let pid = w.child.as_ref().unwrap().id();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    // Argon2id unsealing takes 64 MiB; the rest is the runtime and headers, never a
    // hostile length's worth.
    assert!(hwm_kib < 400 * 1024, "worker peak RSS {hwm_kib} KiB after the hostile table");
    s.upload("fx/hello-1.0-1.noarch.rpm", &fx.join("rpm/hello-1.0-1.noarch.rpm"));
    let (code, ev) = s.submit_wait("after-hostile", "release", "after/", &["fx/hello-1.0-1.noarch.rpm"]);
    assert_eq!(code, 0, "{ev:#?}");
    let signed = s.download(&s.output, "after/hello-1.0-1.noarch.rpm");
    accepts("verify_rpm", &[&cert, &signed]);
    assert!(!w.log_text().contains("panicked"), "a panic was logged");
}
