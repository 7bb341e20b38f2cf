//! The worker end to end, against the real RabbitMQ and S3 server, with outputs checked by
//! the real verifiers.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::stack::{Proxy, Stack};
use common::*;
use signet::event::Event;

/// Fixtures uploaded to the stack's input bucket under `fx/`.
fn upload_fixtures(s: &Stack) -> PathBuf {
    let fx = s.env.fixtures();
    for rel in [
        "rpm/hello-1.0-1.noarch.rpm",
        "rpm/world-2.0-1.noarch.rpm",
        "deb/hello_1.0_all.deb",
        "deb/hello-gz_1.0_all.deb",
        "deb/hello-zst_1.0_all.deb",
        "files/hello-1.0.tar.gz",
    ] {
        s.upload(&format!("fx/{}", rel.rsplit('/').next().unwrap()), &fx.join(rel));
    }
    fx
}

/// Downloads everything a succeeded event names and checks it: digests against the event,
/// signatures with the real verifiers.
fn check_outputs(s: &Stack, ev: &Event, cert: &std::path::Path) {
    assert!(ev.succeeded(), "{ev:#?}");
    assert_eq!(ev.data.key_fingerprint.as_ref().map(|f| f.len()), Some(40));
    let sums = ev.data.sha256sums.as_ref().expect("sha256sums");
    let prefix = sums.key.trim_end_matches("SHA256SUMS");
    let mut local = HashMap::new();
    for o in &ev.data.outputs {
        let p = s.download(&o.bucket, &o.key);
        let bytes = std::fs::read(&p).unwrap();
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), o.sha256, "{}", o.key);
        assert_eq!(bytes.len() as u64, o.size, "{}", o.key);
        local.insert(o.key.clone(), p);
    }
    for extra in ["SHA256SUMS", "SHA256SUMS.asc", "manifest.json", "manifest.json.asc"] {
        local.insert(format!("{prefix}{extra}"), s.download(&s.output, &format!("{prefix}{extra}")));
    }
    let dir = local[&sums.key].parent().unwrap().to_owned();
    accepts("verify_sha256sums", &[&dir]);
    accepts("verify_gpg", &[cert, &dir.join("SHA256SUMS.asc"), &dir.join("SHA256SUMS")]);
    accepts("verify_sqv", &[cert, &dir.join("manifest.json.asc"), &dir.join("manifest.json")]);
    for o in &ev.data.outputs {
        let p = &local[&o.key];
        match o.format {
            signet::sign::Format::Rpm => accepts("verify_rpm", &[cert, p]),
            signet::sign::Format::Deb => accepts("verify_deb", &[cert, p]),
            signet::sign::Format::Detached if o.key.ends_with(".asc") => {
                let data = p.with_extension("");
                accepts("verify_gpg", &[cert, p, &data]);
                accepts("verify_sqv", &[cert, p, &data]);
            }
            _ => {}
        }
    }
}

#[test]
fn two_workers_sign_rpm_deb_and_tarball_jobs_end_to_end() {
    let s = Stack::new();
    let cert = s.env.generate("release", "ed25519");
    upload_fixtures(&s);
    let _w1 = s.worker(1, &[]);
    let _w2 = s.worker(2, &[]);

    let jobs: Vec<(&str, Vec<&str>)> = vec![
        ("e2e-rpm", vec!["fx/hello-1.0-1.noarch.rpm", "fx/world-2.0-1.noarch.rpm"]),
        ("e2e-deb", vec!["fx/hello_1.0_all.deb", "fx/hello-gz_1.0_all.deb", "fx/hello-zst_1.0_all.deb"]),
        ("e2e-tar", vec!["fx/hello-1.0.tar.gz"]),
        ("e2e-mix", vec!["fx/hello-1.0-1.noarch.rpm", "fx/hello_1.0_all.deb", "fx/hello-1.0.tar.gz"]),
    ];
    // Submit all at once from parallel producers; both workers take part.
    let results: Vec<(i32, Option<Event>)> = std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(id, arts)| {
                let s = &s;
                sc.spawn(move || s.submit_wait(id, "release", &format!("releases/{id}/"), arts))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((id, arts), (code, ev)) in jobs.iter().zip(&results) {
        assert_eq!(*code, 0, "submit --wait for {id} exited {code}");
        let ev = ev.as_ref().expect("event printed");
        assert_eq!(ev.subject, *id);
        // Every artifact is in the event: one output per package, two per detached file.
        let expected: usize = arts.iter().map(|a| if a.ends_with(".tar.gz") { 2 } else { 1 }).sum();
        assert_eq!(ev.data.outputs.len(), expected, "{ev:#?}");
        check_outputs(&s, ev, &cert);
    }
    // The events are also on record for consumers, and match the published JSON Schemas,
    // as does a manifest.
    let evs = s.events();
    let lines: String = evs.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    std::fs::write(s.env.path("events.jsonl"), lines).unwrap();
    let python =
        format!("{}/venv/bin/python", std::env::var("SIGNET_STACK_DIR").unwrap_or("/var/tmp/signet-stack".into()));
    ok(std::process::Command::new(&python)
        .arg(repo().join("schemas/validate.py"))
        .arg(repo().join("schemas/event.schema.json"))
        .arg(s.env.path("events.jsonl")));
    ok(std::process::Command::new(&python)
        .arg(repo().join("schemas/validate.py"))
        .arg(repo().join("schemas/manifest.schema.json"))
        .arg(s.download(&s.output, "releases/e2e-mix/manifest.json")));
    for (id, _) in &jobs {
        assert_eq!(evs.iter().filter(|e| e.subject == *id && e.succeeded()).count(), 1, "{id}");
    }
    // Both workers appended to one audit log at once, each to its own chain: one record per
    // job, every chain intact.
    let out = ok(s.signet().args(["audit", "verify"]).env("SIGNET_AUDIT", &s.audit));
    assert!(out.contains(&format!(": {} records in ", jobs.len())) && out.contains("all intact"), "{out}");
}

#[test]
fn malformed_jobs_fail_once_dead_letter_and_write_nothing() {
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    let fx = upload_fixtures(&s);
    // A corrupt RPM: a good one cut in its payload.
    let rpm = std::fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap();
    let corrupt = s.env.path("corrupt.rpm");
    std::fs::write(&corrupt, &rpm[..rpm.len() - 64]).unwrap();
    s.upload("fx/corrupt-1.0-1.noarch.rpm", &corrupt);

    let job = |id: &str, key: &str, obj: &str, sha: Option<&str>| {
        let mut a = serde_json::json!({"bucket": s.input, "key": obj});
        if let Some(h) = sha {
            a["sha256"] = h.into();
        }
        serde_json::json!({"job_id": id, "key": key, "artifacts": [a], "output": {"bucket": s.output, "prefix": format!("bad/{id}/")}})
            .to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad-notjson", "this is not JSON {".into(), "invalid_job"),
        (
            "bad-schema",
            serde_json::json!({"job_id": "bad-schema", "key": "release", "artifacts": "nope"}).to_string(),
            "invalid_job",
        ),
        ("bad-key", job("bad-key", "no-such-key", "fx/hello-1.0.tar.gz", None), "unknown_key"),
        ("bad-missing", job("bad-missing", "release", "fx/does-not-exist.rpm", None), "artifact_missing"),
        ("bad-sha", job("bad-sha", "release", "fx/hello-1.0.tar.gz", Some(&"0".repeat(64))), "checksum_mismatch"),
        ("bad-rpm", job("bad-rpm", "release", "fx/corrupt-1.0-1.noarch.rpm", None), "invalid_artifact"),
    ];
    for (id, body, _) in &cases {
        s.publish_raw(body.as_bytes(), id);
    }
    let _w = s.worker(1, &[]);
    let evs = s.wait_events(60, "a failed event per bad job", |evs| {
        cases.iter().all(|(id, _, _)| evs.iter().any(|e| e.subject == *id))
    });
    for (id, _, code) in &cases {
        let mine: Vec<&Event> = evs.iter().filter(|e| e.subject == *id).collect();
        assert_eq!(mine.len(), 1, "{id}: {mine:#?}");
        assert!(!mine[0].succeeded());
        let err = mine[0].data.error.as_ref().unwrap();
        assert_eq!(serde_json::to_value(err.code).unwrap(), *code, "{id}: {err:?}");
        assert!(mine[0].data.outputs.is_empty());
        assert!(s.output_keys(&format!("bad/{id}/")).is_empty(), "{id} wrote outputs");
    }
    // Each landed in the dead-letter queue (give the broker a moment to route the last).
    let mut dead = s.dead_letters(cases.len());
    dead.sort();
    let mut want: Vec<String> = cases.iter().map(|(id, _, _)| id.to_string()).collect();
    want.sort();
    assert_eq!(dead, want);

    // The worker is still healthy: a good job succeeds.
    let (code, ev) = s.submit_wait("good-after-bad", "release", "good/", &["fx/hello-1.0-1.noarch.rpm"]);
    assert_eq!(code, 0);
    assert!(ev.unwrap().succeeded());
}

#[test]
fn a_worker_killed_mid_job_loses_nothing() {
    let s = Stack::new();
    let cert = s.env.generate("release", "rsa4096");
    upload_fixtures(&s);
    // Big packages keep a job busy long enough to be killed in the middle of it.
    s.upload_big_rpm(60000000);
    let ids: Vec<String> = (0..4).map(|i| format!("kill-{i}")).collect();
    for id in &ids {
        s.submit(id, &format!("k/{id}/"), &["fx/big-1.0-1.noarch.rpm", "fx/hello_1.0_all.deb"]);
    }
    let mut w = s.worker(1, &[("SIGNET_CONCURRENCY", "2")]);
    w.wait_log("job started", 30);
    std::thread::sleep(Duration::from_millis(300));
    w.signal(libc::SIGKILL);
    assert_eq!(w.wait(10), None, "killed by a signal");
    let done_before = s.events().len();
    assert!(done_before < ids.len(), "all jobs finished before the kill; the test proves nothing");

    let _w2 = s.worker(2, &[]);
    let evs = s.wait_events(120, "all jobs succeeded after restart", |evs| {
        ids.iter().all(|id| evs.iter().any(|e| e.subject == *id && e.succeeded()))
    });
    assert!(evs.iter().all(|e| e.succeeded()), "{evs:#?}");
    for id in &ids {
        let ev = evs.iter().find(|e| e.subject == *id).unwrap();
        check_outputs(&s, ev, &cert);
    }
    assert!(s.dead_letters(0).is_empty());
}

#[test]
fn jobs_ride_out_an_s3_outage() {
    let s = Stack::new();
    let cert = s.env.generate("release", "ed25519");
    upload_fixtures(&s);
    let proxy = Proxy::new(&s.s3_endpoint);
    let _w = s.worker_with_endpoint(1, &proxy.url(), &[]);
    // A first job proves the path through the proxy works.
    let (code, _) = s.submit_wait("outage-0", "release", "o/0/", &["fx/hello-1.0-1.noarch.rpm"]);
    assert_eq!(code, 0);

    proxy.down();
    let ids = ["outage-1", "outage-2", "outage-3"];
    for id in ids {
        s.submit(id, &format!("o/{id}/"), &["fx/hello-1.0-1.noarch.rpm", "fx/hello_1.0_all.deb"]);
    }
    std::thread::sleep(Duration::from_secs(4));
    // While S3 is away nothing can have finished.
    assert!(s.events().iter().all(|e| e.subject == "outage-0"));
    proxy.up();

    let evs = s.wait_events(90, "jobs to finish after the outage", |evs| {
        ids.iter().all(|id| evs.iter().any(|e| e.subject == *id))
    });
    for id in ids {
        let ev = evs.iter().find(|e| e.subject == id).unwrap();
        check_outputs(&s, ev, &cert);
    }
    let log = _w.log_text();
    assert!(
        log.contains("\"level\":\"WARN\"") && log.contains("object store unavailable"),
        "no retry was logged:\n{log}"
    );
}

#[test]
fn the_same_job_twice_signs_once_and_reports_twice() {
    let s = Stack::new();
    let cert = s.env.generate("release", "ed25519");
    upload_fixtures(&s);
    let w = s.worker(1, &[]);
    let arts = ["fx/hello-1.0-1.noarch.rpm", "fx/hello-1.0.tar.gz"];
    let (c1, e1) = s.submit_wait("twice", "release", "t/", &arts);
    let manifest1 = std::fs::read(s.download(&s.output, "t/manifest.json")).unwrap();
    let (c2, e2) = s.submit_wait("twice", "release", "t/", &arts);
    assert_eq!((c1, c2), (0, 0));
    let (e1, e2) = (e1.unwrap(), e2.unwrap());
    assert_ne!(e1.id, e2.id, "two distinct events");
    assert_eq!(e1.data.outputs, e2.data.outputs, "with the same outputs");
    check_outputs(&s, &e2, &cert);
    // Signed once: the manifest (with its signing time) was not rewritten.
    assert_eq!(manifest1, std::fs::read(s.download(&s.output, "t/manifest.json")).unwrap());
    assert_eq!(w.log_text().matches("outputs already committed").count(), 1);
    assert_eq!(s.events().iter().filter(|e| e.subject == "twice" && e.succeeded()).count(), 2);

    // The same job id with other inputs is a conflict, and changes nothing.
    let (c3, e3) = s.submit_wait("twice", "release", "t/", &["fx/hello-1.0-1.noarch.rpm"]);
    assert_eq!(c3, 1);
    assert_eq!(serde_json::to_value(e3.unwrap().data.error.unwrap().code).unwrap(), "job_conflict");
    // Another job writing into the same prefix is refused too.
    let (c4, e4) = s.submit_wait("intruder", "release", "t/", &arts);
    assert_eq!(c4, 1);
    assert_eq!(serde_json::to_value(e4.unwrap().data.error.unwrap().code).unwrap(), "output_conflict");
    assert_eq!(manifest1, std::fs::read(s.download(&s.output, "t/manifest.json")).unwrap());
}

#[test]
fn sigterm_finishes_the_job_in_flight_then_exits_zero() {
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    upload_fixtures(&s);
    s.upload_big_rpm(60000000);
    s.submit("graceful", "g/", &["fx/big-1.0-1.noarch.rpm"]);
    let mut w = s.worker(1, &[]);
    w.wait_log("job started", 30);
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait(60), Some(0), "worker exit code:\n{}", w.log_text());
    let log = w.log_text();
    assert!(log.contains("SIGTERM received") && log.contains("worker stopped"), "{log}");
    let evs = s.events();
    assert!(evs.iter().any(|e| e.subject == "graceful" && e.succeeded()), "{evs:#?}\n{log}");
    assert_eq!(s.queued_jobs(), 0);
}

/// A producer that submits the same job twice at once (a CI retry) gets two succeeded
/// events, and the objects in the bucket still match the manifest and SHA256SUMS: the two
/// deliveries never write the same prefix at the same time.
#[test]
fn duplicate_submissions_racing_on_two_workers_stay_consistent() {
    // One job slot per worker: the two deliveries run on different workers (broker lock).
    duplicate_race("1");
}

#[test]
fn duplicate_submissions_racing_in_one_worker_stay_consistent() {
    // Two slots per worker: both deliveries may land on the same worker (in-process guard).
    duplicate_race("2");
}

fn duplicate_race(concurrency: &str) {
    let s = Stack::new();
    let cert = s.env.generate("release", "rsa4096");
    upload_fixtures(&s);
    s.upload_big_rpm(30000000);
    for _ in 0..2 {
        s.submit("dup", "dup/", &["fx/big-1.0-1.noarch.rpm", "fx/hello-1.0.tar.gz"]);
    }
    let _w1 = s.worker(1, &[("SIGNET_CONCURRENCY", concurrency)]);
    let _w2 = s.worker(2, &[("SIGNET_CONCURRENCY", concurrency)]);
    let evs = s.wait_events(90, "two events for the duplicated job", |evs| {
        evs.iter().filter(|e| e.subject == "dup").count() >= 2
    });
    let dup: Vec<&Event> = evs.iter().filter(|e| e.subject == "dup").collect();
    assert_eq!(dup.len(), 2, "{dup:#?}");
    assert!(dup.iter().all(|e| e.succeeded()), "{dup:#?}");
    assert_eq!(dup[0].data.outputs, dup[1].data.outputs);
    // What is in the bucket is what the manifest and the events say.
    check_outputs(&s, dup[1], &cert);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.download(&s.output, "dup/manifest.json")).unwrap()).unwrap();
    for o in &dup[0].data.outputs {
        let rec = m["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["outputs"].as_array().unwrap())
            .find(|r| o.key.ends_with(r["name"].as_str().unwrap()))
            .unwrap();
        assert_eq!(rec["sha256"].as_str().unwrap(), o.sha256);
    }
}

#[test]
fn submit_wait_exits_2_when_no_worker_answers_in_time() {
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    let mut c = s.signet();
    c.args([
        "submit",
        "--wait",
        "--timeout",
        "2",
        "--key",
        "release",
        "--output-bucket",
        &s.output,
        "--job-id",
        "nobody-home",
    ]);
    c.arg(format!("s3://{}/fx/whatever.rpm", s.input));
    let started = Instant::now();
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no completion event for job nobody-home"), "{}", text(&o));
    // The job itself was accepted by the broker and waits for a worker.
    assert_eq!(s.queued_jobs(), 1);
}

/// A signed RPM above `SIGNET_COPY_TAIL_BYTES` (default 64 MiB) is assembled in S3: the
/// worker uploads its new lead and signature header and the first 5 MiB, and the server
/// copies the rest from the input object. `SIGNET_TEST_BIG_RPM_MIB` sets the size (default
/// 96; the closing figures were taken with 1024).
#[test]
fn a_big_rpm_is_assembled_in_s3_without_uploading_its_payload() {
    let s = Stack::new();
    let cert = s.env.generate("release", "ed25519");
    upload_fixtures(&s);
    let mib: u64 = std::env::var("SIGNET_TEST_BIG_RPM_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(96);
    s.upload_big_rpm(mib << 20);
    // Every byte the worker sends to S3 goes through the proxy and is counted.
    let proxy = Proxy::new(&s.s3_endpoint);
    let w = s.worker_with_endpoint(1, &proxy.url(), &[]);
    // A small job first: the key is unsealed (Argon2id's 64 MiB) and cached, so what the big
    // job adds to the peak is its own.
    let (code, ev) = s.submit_wait("small", "release", "small/", &["fx/hello-1.0-1.noarch.rpm"]);
    assert_eq!(code, 0, "{ev:#?}");
    let (idle_peak, sent_before) = (w.peak_rss_kib(), proxy.sent());

    let (code, ev) = s.submit_wait("big", "release", "big/", &["fx/big-1.0-1.noarch.rpm"]);
    let ev = ev.expect("an event");
    assert_eq!(code, 0, "{ev:#?}");
    let sent = proxy.sent() - sent_before;
    let peak = w.peak_rss_kib();
    eprintln!("{mib} MiB RPM: {sent} bytes sent to S3, peak RSS {peak} KiB after {idle_peak} KiB");
    assert!(sent < 16 << 20, "the worker sent {sent} bytes to S3 for a {mib} MiB package");
    assert!(peak < idle_peak + 64 * 1024, "the worker's peak RSS went from {idle_peak} KiB to {peak} KiB");
    assert!(w.log_text().contains("assembled in S3 from the input"), "{}", w.log_text());
    // The assembled package is what the event says, byte for byte, and passes rpmkeys,
    // SHA256SUMS and the manifest's signature.
    check_outputs(&s, &ev, &cert);
    let rpm = ev.data.outputs.iter().find(|o| o.key.ends_with(".rpm")).expect("the RPM");
    assert!(rpm.size > mib << 20);
}
