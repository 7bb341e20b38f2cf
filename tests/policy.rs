//! Who may sign with which key, against real RabbitMQ users: the policy, the broker's
//! user_id check, the audit trail, and what a full run leaves in logs and events.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::stack::{Stack, rabbit_user};
use common::*;
use signet::audit::{AuditRecord, Outcome};
use signet::event::Event;

const RPM: &str = "fx/hello-1.0-1.noarch.rpm";
const TAR: &str = "fx/hello-1.0.tar.gz";

fn job(s: &Stack, id: &str, key: &str, source: &str, prefix: &str) -> String {
    serde_json::json!({
        "job_id": id,
        "key": key,
        "artifacts": [{"bucket": s.input, "key": source}],
        "output": {"bucket": s.output, "prefix": prefix},
    })
    .to_string()
}

fn failed_code(ev: &Event) -> &str {
    ev.data.error.as_ref().map(|e| e.code.as_str()).unwrap_or("(none)")
}

#[test]
fn producers_sign_only_with_their_keys_into_their_prefixes_and_everything_is_audited() {
    let s = Stack::new();
    let stable = s.env.generate("stable", "ed25519");
    let testing = s.env.generate("testing", "rsa4096");
    let stable_pw = rabbit_user("ci-stable");
    let testing_pw = rabbit_user("ci-testing");
    let as_stable = s.amqp_url_as("ci-stable", &stable_pw);
    let as_testing = s.amqp_url_as("ci-testing", &testing_pw);
    let fx = s.env.fixtures();
    s.upload(RPM, &fx.join("rpm/hello-1.0-1.noarch.rpm"));
    s.upload(TAR, &fx.join("files/hello-1.0.tar.gz"));
    s.upload("private/hello-1.0-1.noarch.rpm", &fx.join("rpm/hello-1.0-1.noarch.rpm"));
    let (i, o) = (&s.input, &s.output);
    let policy = s.write_policy(
        "two-producers.toml",
        &format!(
            r#"
[keys.stable]
producers = ["ci-stable"]
sources = ["{i}/fx/*"]
outputs = ["{o}/stable/*"]
formats = ["rpm"]

[keys.testing]
producers = ["ci-testing"]
sources = ["{i}/fx/*"]
outputs = ["{o}/testing/*"]
formats = ["rpm", "detached"]
allow_mixed_formats = true
"#
        ),
    );
    let policy = policy.to_str().unwrap();
    // Trace-level logging: the run's logs are searched for secrets below.
    let w = s.worker(1, &[("SIGNET_POLICY", policy), ("RUST_LOG", "trace")]);

    // Allowed: each producer with its own key, into its own prefix.
    let (code, ok_stable) = s.submit_wait_as(&as_stable, "ok-stable", "stable", "stable/1.0/", &[RPM]);
    assert_eq!(code, 0, "{ok_stable:#?}");
    let (code, ok_testing) = s.submit_wait_as(&as_testing, "ok-testing", "testing", "testing/1.0/", &[RPM, TAR]);
    assert_eq!(code, 0, "{ok_testing:#?}");
    let stable_rpm = s.download(o, "stable/1.0/hello-1.0-1.noarch.rpm");
    accepts("verify_rpm", &[&stable, &stable_rpm]);
    rejects("verify_rpm", &[&testing, &stable_rpm]);
    let testing_rpm = s.download(o, "testing/1.0/hello-1.0-1.noarch.rpm");
    accepts("verify_rpm", &[&testing, &testing_rpm]);
    let sums = s.download(o, "testing/1.0/SHA256SUMS");
    accepts("verify_gpg", &[&testing, &s.download(o, "testing/1.0/SHA256SUMS.asc"), &sums]);
    accepts(
        "verify_gpg",
        &[&testing, &s.download(o, "testing/1.0/hello-1.0.tar.gz.asc"), &s.download(o, "testing/1.0/hello-1.0.tar.gz")],
    );

    // Denied, each for its own reason.
    let denied: Vec<(&str, &str, &str, &str, &str, &str)> = vec![
        // (job, producer URL, key, source, prefix, what the message must say)
        (
            "testing-names-stable",
            as_testing.as_str(),
            "stable",
            RPM,
            "stable/2.0/",
            "\"ci-testing\" may not sign with key \"stable\"",
        ),
        ("outside-prefix", as_stable.as_str(), "stable", RPM, "testing/evil/", "may not write to"),
        (
            "outside-source",
            as_stable.as_str(),
            "stable",
            "private/hello-1.0-1.noarch.rpm",
            "stable/3.0/",
            "may not sign artifacts from",
        ),
        ("format-not-allowed", as_stable.as_str(), "stable", TAR, "stable/4.0/", "may not produce detached"),
        ("unknown-producer", s.amqp_url.as_str(), "stable", RPM, "stable/5.0/", "\"guest\" may not sign"),
    ];
    for (id, url, key, src, prefix, _) in &denied {
        let (code, ev) = s.submit_wait_as(url, id, key, prefix, &[src]);
        let ev = ev.expect("failed event");
        assert_eq!((code, failed_code(&ev)), (1, "unauthorized"), "{id}: {ev:#?}");
    }
    // No user_id at all (a client that leaves it out).
    s.publish_as(&s.amqp_url, job(&s, "no-user-id", "stable", RPM, "stable/6.0/").as_bytes(), "no-user-id", None)
        .expect("the broker accepts a message without user_id");
    // A forged user_id: ci-testing claiming to be ci-stable. RabbitMQ refuses it.
    let forged = s.publish_as(
        &as_testing,
        job(&s, "forged", "stable", RPM, "stable/7.0/").as_bytes(),
        "forged",
        Some("ci-stable"),
    );
    let err = forged.expect_err("the broker must refuse a forged user_id");
    assert!(err.contains("PRECONDITION_FAILED") || err.contains("user_id"), "{err}");

    let evs = s.wait_events(60, "the no-user-id job", |e| e.iter().any(|e| e.subject == "no-user-id"));
    let by_id: HashMap<&str, &Event> = evs.iter().map(|e| (e.subject.as_str(), e)).collect();
    let no_user = by_id["no-user-id"];
    assert_eq!(failed_code(no_user), "unauthorized");
    assert!(no_user.data.error.as_ref().unwrap().message.contains("no user_id"), "{no_user:#?}");
    for (id, .., says) in &denied {
        let msg = &by_id[id].data.error.as_ref().unwrap().message;
        assert!(msg.contains(says), "{id}: {msg:?} should say {says:?}");
    }
    assert!(!by_id.contains_key("forged"), "a forged job must never reach a worker");
    assert_eq!(s.queued_jobs(), 0);
    let mut dead = s.dead_letters(denied.len() + 1);
    dead.sort();
    let mut want: Vec<&str> = denied.iter().map(|d| d.0).chain(["no-user-id"]).collect();
    want.sort();
    assert_eq!(dead, want);
    // Nothing but the two allowed jobs' outputs was written.
    let written = s.output_keys("");
    assert!(written.iter().all(|k| k.starts_with("stable/1.0/") || k.starts_with("testing/1.0/")), "{written:#?}");

    // The audit trail: one record per signing run and per denial, chained.
    let verify = || run(s.signet().args(["audit", "verify"]).env("SIGNET_AUDIT", &s.audit));
    let out = verify();
    assert!(out.status.success(), "{}", text(&out));
    let records: Vec<AuditRecord> =
        s.audit_records().iter().map(|(_, b)| serde_json::from_slice(b).expect("audit record")).collect();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{} records in 1 chain, all intact", records.len()))
    );
    assert_eq!(records.len(), 2 + denied.len() + 1, "{records:#?}");
    let rec = |id: &str| records.iter().find(|r| r.job_id == id).unwrap_or_else(|| panic!("no record of {id}"));
    let signed = rec("ok-stable");
    assert_eq!(signed.outcome, Outcome::Signed);
    assert_eq!(signed.producer.as_deref(), Some("ci-stable"));
    assert_eq!(signed.key_fingerprint, ok_stable.as_ref().unwrap().data.key_fingerprint);
    for out in &ok_stable.as_ref().unwrap().data.outputs {
        let object = format!("s3://{}/{}", out.bucket, out.key);
        assert!(signed.outputs.iter().any(|a| a.object == object && a.sha256 == out.sha256), "{object} not audited");
    }
    let input_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap(),
    ));
    assert_eq!(signed.artifacts[0].sha256.as_deref(), Some(input_sha.as_str()));
    let d = rec("testing-names-stable");
    assert_eq!((d.outcome, d.producer.as_deref(), d.key.as_str()), (Outcome::Denied, Some("ci-testing"), "stable"));
    assert!(d.outputs.is_empty());
    assert_eq!(rec("no-user-id").producer, None);

    // Edit one record: verify fails and names it; put it back and it passes again.
    let objects = s.audit_records();
    let (key3, original) = objects[2].clone();
    let edited = String::from_utf8(original.clone()).unwrap().replacen("\"job_id\":\"", "\"job_id\":\"x", 1);
    let put = |key: &str, body: &[u8]| s.put_audit_object(key, body);
    put(&key3, edited.as_bytes());
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("record 3 ({key3}) was edited")), "{}", text(&out));
    put(&key3, &original);
    assert!(verify().status.success());
    // Remove one record: verify names the gap.
    let (key5, _) = &objects[4];
    s.rt.block_on(s.store.client().delete_object().bucket("signet-audit").key(key5).send()).unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("record 5 is missing"), "{}", text(&out));

    // No secret anywhere in what the run printed: worker logs (at trace level), events,
    // command output.
    let vault = signet::vault::Vault::open(
        &format!("dir:{}", s.env.path("vault").display()),
        Some(&s.env.path("passphrase")),
        &Default::default(),
    )
    .unwrap();
    let mut secrets = vec![
        ("the vault passphrase", vec![PASSPHRASE.to_owned()]),
        ("ci-stable's password", vec![stable_pw.clone()]),
        ("ci-testing's password", vec![testing_pw.clone()]),
    ];
    for name in ["stable", "testing"] {
        let tsk = vault.signing_key(&name.parse().unwrap()).unwrap().to_secret_bytes().unwrap();
        secrets.push((if name == "stable" { "key stable" } else { "key testing" }, secret_forms(&tsk)));
    }
    let log = w.log_text();
    assert!(log.lines().count() > 100, "expected a trace-level log");
    let texts = vec![
        ("worker log".to_owned(), log),
        ("events".to_owned(), ok(s.signet().arg("events"))),
        ("keys list".to_owned(), ok(s.signet().args(["keys", "list"]))),
    ];
    assert_no_secrets(&texts, &secrets);
}

#[test]
fn the_worker_needs_a_policy_or_an_explicit_insecure_flag() {
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    let mut no_policy = s.signet();
    no_policy.arg("worker").env("SIGNET_AUDIT", &s.audit).env_remove("SIGNET_POLICY");
    let err = fails(&mut no_policy);
    assert!(err.contains("SIGNET_POLICY"), "{err}");

    let mut bad = s.signet();
    let path = s.write_policy("bad.toml", "[keys.release]\nproducers = [\"*\"]\n");
    bad.arg("worker").env("SIGNET_AUDIT", &s.audit).env("SIGNET_POLICY", &path);
    let err = fails(&mut bad);
    assert!(err.contains("bad.toml"), "{err}");

    // The development flag works, and says loudly what it does.
    let log = s.env.path("insecure.log");
    let mut dev = s.signet();
    dev.args(["worker", "--insecure-no-policy"])
        .env("SIGNET_AUDIT", &s.audit)
        .env("SIGNET_WORK_DIR", s.env.path("work"))
        .env_remove("SIGNET_POLICY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = dev.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("worker consuming") {
        assert!(std::time::Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
        assert!(child.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INSECURE") && text.contains("ERROR"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}
