//! Release approvals end to end, with real broker users made by `rabbitmqctl`: a key that
//! needs two approvals signs only after two distinct approvers approved exactly the bytes
//! they were shown; everything else leaves the job pending; a rejection, an expiry, an
//! input replaced after approval and a worker killed in between all end as they should.

mod common;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::stack::{Stack, rabbit_user};
use common::*;
use signet::approval::{ApprovalMessage, PendingRequest, grouped_fingerprint};
use signet::audit::{AuditRecord, Outcome};
use signet::event::{self, Event};

const RPM: &str = "fx/hello-1.0-1.noarch.rpm";
const DEB: &str = "fx/hello_1.0_all.deb";

/// Broker users of one test (names unique to it: tests run in parallel on one broker).
struct User {
    name: String,
    url: String,
}

fn user(s: &Stack, role: &str) -> User {
    let name = format!("{role}-{}", &s.ns[2..]);
    let password = rabbit_user(&name);
    User { url: s.amqp_url_as(&name, &password), name }
}

fn with_approvals(s: &Stack, mut c: Command) -> Command {
    c.env("SIGNET_APPROVALS", s.approvals());
    c
}

/// `signet pending --json`: the open requests.
fn pending(s: &Stack) -> Vec<(PendingRequest, Vec<String>)> {
    let out = ok(with_approvals(s, s.signet()).args(["pending", "--json"]));
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let approvals = v["approvals"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
            (serde_json::from_value(v["request"].clone()).unwrap(), approvals)
        })
        .collect()
}

fn wait_pending(s: &Stack, job_id: &str) -> PendingRequest {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some((r, _)) = pending(s).into_iter().find(|(r, _)| r.job_id.as_str() == job_id) {
            return r;
        }
        assert!(Instant::now() < deadline, "job {job_id} never became pending");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `signet submit` of `artifacts` with `key` into `prefix` as `who`; `--wait` in the
/// background when `wait`.
fn submit(
    s: &Stack,
    who: &User,
    job_id: &str,
    key: &str,
    prefix: &str,
    artifacts: &[&str],
    wait: bool,
) -> Option<Child> {
    let mut c = s.signet();
    c.env("SIGNET_AMQP_URL", &who.url).args([
        "submit",
        "--key",
        key,
        "--output-bucket",
        &s.output,
        "--output-prefix",
        prefix,
        "--job-id",
        job_id,
    ]);
    for a in artifacts {
        c.arg(format!("s3://{}/{a}", s.input));
    }
    if wait {
        c.args(["--wait", "--timeout", "300"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        Some(c.spawn().expect("spawn submit"))
    } else {
        ok(&mut c);
        None
    }
}

/// `signet approve JOB` (or `reject`) as `who`.
fn decide(s: &Stack, who: &User, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = with_approvals(s, s.signet());
    c.env("SIGNET_AMQP_URL", &who.url).args(args).arg("--timeout").arg("90");
    match stdin {
        None => run(c.stdin(Stdio::null())),
        Some(answer) => {
            let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

fn events_of(s: &Stack, job_id: &str, kind: &str) -> Vec<Event> {
    s.events().into_iter().filter(|e| e.data.job_id == job_id && e.kind == kind).collect()
}

fn wait_event(s: &Stack, job_id: &str, kind: &str, n: usize) -> Vec<Event> {
    let evs = s.wait_events(90, &format!("{n} {kind} events of {job_id}"), |evs| {
        evs.iter().filter(|e| e.data.job_id == job_id && e.kind == kind).count() >= n
    });
    evs.into_iter().filter(|e| e.data.job_id == job_id && e.kind == kind).collect()
}

fn audit(s: &Stack, job_id: &str) -> Vec<AuditRecord> {
    s.audit_records()
        .into_iter()
        .map(|(_, b)| serde_json::from_slice::<AuditRecord>(&b).unwrap())
        .filter(|r| r.job_id == job_id)
        .collect()
}

/// Checks every event of the test, and `documents` (`(schema, file)`), against the
/// contract's JSON Schemas.
fn validate(s: &Stack, documents: &[(&str, &std::path::Path)]) {
    let python =
        format!("{}/venv/bin/python", std::env::var("SIGNET_STACK_DIR").unwrap_or("/var/tmp/signet-stack".into()));
    let events = s.env.path("events.jsonl");
    std::fs::write(&events, ok(s.signet().arg("events"))).unwrap();
    let mut all = vec![("event", events.as_path())];
    all.extend_from_slice(documents);
    for (schema, file) in all {
        ok(Command::new(&python)
            .arg(repo().join("schemas/validate.py"))
            .arg(repo().join(format!("schemas/{schema}.schema.json")))
            .arg(file));
    }
}

fn code(ev: &Event) -> &str {
    ev.data.error.as_ref().map(|e| e.code.as_str()).unwrap_or("(none)")
}

fn message(ev: &Event) -> &str {
    ev.data.error.as_ref().map(|e| e.message.as_str()).unwrap_or("")
}

fn sha256(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn two_approvers_release_exactly_the_bytes_they_were_shown() {
    let s = Stack::new();
    let cert = s.env.generate("release", "ed25519");
    let ci = user(&s, "ci");
    let (alice, bob) = (user(&s, "alice"), user(&s, "bob"));
    let mallory = user(&s, "mallory");
    let fx = s.env.fixtures();
    s.upload(RPM, &fx.join("rpm/hello-1.0-1.noarch.rpm"));
    s.upload(DEB, &fx.join("deb/hello_1.0_all.deb"));
    let policy = s.write_policy(
        "approvals.toml",
        &format!(
            "[keys.release]\nproducers = [{:?}]\nsources = [\"{}/fx/*\"]\noutputs = [\"{}/rel/*\"]\n\
             formats = [\"rpm\", \"deb\"]\napprovers = [{:?}, {:?}, \"carol\"]\napprovals = 2\napproval_ttl = \"1h\"\n",
            ci.name, s.input, s.output, alice.name, bob.name
        ),
    );
    let policy = policy.to_str().unwrap();
    let _w = s.worker(1, &[("SIGNET_POLICY", policy), ("SIGNET_APPROVALS", &s.approvals())]);

    // The producer submits and waits, as a CI job blocking on the human step would.
    let waiting = submit(&s, &ci, "rel-1", "release", "rel/1.0/", &[RPM, DEB], true).unwrap();
    let req = wait_pending(&s, "rel-1");
    assert_eq!(req.producer, ci.name);
    assert_eq!(req.approvals_required, 2);
    let rpm_sha = sha256(&fx.join("rpm/hello-1.0-1.noarch.rpm"));
    let deb_sha = sha256(&fx.join("deb/hello_1.0_all.deb"));
    let digests: Vec<&str> = req.artifacts.iter().map(|a| a.sha256.as_str()).collect();
    assert_eq!(digests, vec![rpm_sha.as_str(), deb_sha.as_str()], "the request holds the bytes in S3");
    let listing = ok(with_approvals(&s, s.signet()).arg("pending"));
    let fpr = grouped_fingerprint(&req.key_fingerprint);
    for want in [fpr.as_str(), &rpm_sha, &deb_sha, "0 of 2 needed", &ci.name] {
        assert!(listing.contains(want), "`signet pending` does not show {want}:\n{listing}");
    }
    assert!(s.output_keys("rel/").is_empty(), "signed before any approval");

    // Approvals that must not count, sent as any AMQP client could.
    let good = serde_json::to_vec(&ApprovalMessage::approve(&req)).unwrap();
    let mut other = ApprovalMessage::approve(&req);
    other.artifacts.as_mut().unwrap()[0].sha256 = "0".repeat(64).parse().unwrap();
    let other = serde_json::to_vec(&other).unwrap();
    let mut other_key = ApprovalMessage::approve(&req);
    other_key.key_fingerprint = Some("0123456789ABCDEF0123456789ABCDEF01234567".into());
    let other_key = serde_json::to_vec(&other_key).unwrap();
    s.publish_approval_as(&ci.url, &good, Some(&ci.name)).expect("publish");
    s.publish_approval_as(&mallory.url, &good, Some(&mallory.name)).expect("publish");
    s.publish_approval_as(&alice.url, &other, Some(&alice.name)).expect("publish");
    s.publish_approval_as(&bob.url, &other_key, Some(&bob.name)).expect("publish");
    s.publish_approval_as(&mallory.url, &good, None).expect("publish");
    // A forged user_id never reaches the queue: RabbitMQ checks it.
    let forged = s.publish_approval_as(&mallory.url, &good, Some(&alice.name));
    assert!(forged.is_err(), "the broker accepted a forged user_id");
    let refused = wait_event(&s, "rel-1", event::APPROVAL_REFUSED, 5);
    let said = |who: Option<&str>, code_: &str, needle: &str| {
        assert!(
            refused
                .iter()
                .any(|e| e.data.approver.as_deref() == who && code(e) == code_ && message(e).contains(needle)),
            "no {code_} refusal of {who:?} saying {needle:?}: {refused:#?}"
        )
    };
    said(Some(&ci.name), "unauthorized", "may not approve or reject its own job");
    said(Some(&mallory.name), "unauthorized", "is not an approver");
    said(Some(&alice.name), "invalid_approval", "other inputs or digests");
    said(Some(&bob.name), "invalid_approval", "the approval names key 0123456789ABCDEF");
    said(None, "unauthorized", "no user_id");
    assert_eq!(pending(&s)[0].1, Vec::<String>::new(), "a refused approval was counted");

    // alice approves with the CLI: it shows what will be signed, then counts 1 of 2.
    let o = decide(&s, &alice, &["approve", "rel-1", "--yes"], None);
    let shown = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    for want in [fpr.as_str(), &rpm_sha, &deb_sha, "approval counted: 1 of 2"] {
        assert!(shown.contains(want), "approve did not show {want}:\n{shown}");
    }
    assert!(s.output_keys("rel/").is_empty(), "signed after one approval of two");
    // alice again: the CLI refuses at once, and the worker refuses a raw repeat.
    let again = decide(&s, &alice, &["approve", "rel-1", "--yes"], None);
    assert!(!again.status.success() && text(&again).contains("already approved"), "{}", text(&again));
    s.publish_approval_as(&alice.url, &good, Some(&alice.name)).expect("publish");
    let refused = wait_event(&s, "rel-1", event::APPROVAL_REFUSED, 6);
    assert!(refused.iter().any(|e| message(e).contains("has already approved")), "{refused:#?}");
    assert_eq!(pending(&s)[0].1, vec![alice.name.clone()]);

    // bob answers the prompt; the second approval signs.
    let o = decide(&s, &bob, &["approve", "rel-1"], Some("yes\n"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is signed"), "{}", text(&o));

    // The waiting producer saw the pending event, then the succeeded one listing both.
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed: Vec<Event> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(printed.first().map(|e| e.kind.as_str()), Some(event::PENDING), "{printed:#?}");
    assert_eq!(printed[0].data.request.as_ref().map(|r| r.job_id.as_str()), Some("rel-1"));
    let done = printed.last().unwrap();
    assert!(done.succeeded(), "{done:#?}");
    let mut both = vec![alice.name.clone(), bob.name.clone()];
    both.sort();
    assert_eq!(done.data.approvals, both);

    // The outputs pass the real verifiers; the DEB with nothing but the exported kit.
    let rpm = s.download(&s.output, "rel/1.0/hello-1.0-1.noarch.rpm");
    accepts("verify_rpm", &[&cert, &rpm]);
    let deb = s.download(&s.output, "rel/1.0/hello_1.0_all.deb");
    let kit = s.env.path("kit");
    ok(s.env.signet().args(["keys", "export", "release", "--format", "debsig", "--out"]).arg(&kit));
    let o = run(Command::new("debsig-verify")
        .arg("--policies-dir")
        .arg(kit.join("policies"))
        .arg("--keyrings-dir")
        .arg(kit.join("keyrings"))
        .arg(&deb));
    assert!(o.status.success(), "debsig-verify with the exported kit: {}", text(&o));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.download(&s.output, "rel/1.0/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["approvals"], serde_json::json!(both), "the signed manifest names the approvers");

    // The publish gate over the S3 prefix: passes with the key's keyring, refuses another.
    let ring = s.env.path("release.gpg");
    ok(s.env.signet().args(["keys", "export", "release", "--format", "keyring", "--out"]).arg(&ring));
    let prefix = format!("s3://{}/rel/1.0/", s.output);
    let gate = ok(s.signet().args(["verify", "--require-signed", "--keyring"]).arg(&ring).arg(&prefix));
    assert!(gate.contains("OK ") && gate.contains("hello_1.0_all.deb"), "{gate}");
    let other = s.env.generate("other", "ed25519");
    let refused_gate = fails(s.signet().args(["verify", "--require-signed", "--cert"]).arg(&other).arg(&prefix));
    assert!(refused_gate.contains("NOT-ALLOWED"), "{refused_gate}");

    // Every step is on record, before what it describes, and the log verifies.
    let recs = audit(&s, "rel-1");
    let outcomes: Vec<Outcome> = recs.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes.first(), Some(&Outcome::ApprovalRequested), "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::ApprovalRefused).count(), 6, "{outcomes:?}");
    let approvers: Vec<&str> =
        recs.iter().filter(|r| r.outcome == Outcome::Approved).filter_map(|r| r.approver.as_deref()).collect();
    assert_eq!(approvers, vec![alice.name.as_str(), bob.name.as_str()]);
    let signed: Vec<&AuditRecord> = recs.iter().filter(|r| r.outcome == Outcome::Signed).collect();
    assert_eq!(signed.len(), 1, "{outcomes:?}");
    assert_eq!(signed[0].approvers, both);
    assert_eq!(outcomes.last(), Some(&Outcome::Signed));
    assert!(pending(&s).is_empty(), "a signed job is still listed as pending");
    ok(s.signet().args(["audit", "verify", "--audit", &s.audit]));

    // What went over the wire and into S3 is what the schemas describe.
    let (bucket, prefix) =
        s.approvals().trim_start_matches("s3://").split_once('/').map(|(b, p)| (b.to_owned(), p.to_owned())).unwrap();
    let request = s.download(&bucket, &format!("{prefix}requests/rel-1/request.json"));
    let message = s.env.path("approval.json");
    std::fs::write(&message, &good).unwrap();
    let manifest = s.download(&s.output, "rel/1.0/manifest.json");
    validate(&s, &[("pending-request", &request), ("approval", &message), ("manifest", &manifest)]);
}

#[test]
fn rejection_expiry_a_replaced_input_and_a_killed_worker_end_as_they_should() {
    let s = Stack::new();
    let cert = s.env.generate("release", "ed25519");
    s.env.generate("brief", "ed25519");
    let ci = user(&s, "ci");
    let (alice, bob) = (user(&s, "alice"), user(&s, "bob"));
    let fx = s.env.fixtures();
    for name in ["a", "swap", "b", "kill"] {
        s.upload(&format!("fx/{name}/hello-1.0-1.noarch.rpm"), &fx.join("rpm/hello-1.0-1.noarch.rpm"));
    }
    let rule = |key: &str, ttl: &str| {
        format!(
            "[keys.{key}]\nproducers = [{:?}]\nsources = [\"{}/fx/*\"]\noutputs = [\"{}/out/*\", \"signet-audit/*\"]\nformats = [\"rpm\"]\n\
             approvers = [{:?}, {:?}]\napprovals = 1\napproval_ttl = {ttl:?}\n\n",
            ci.name, s.input, s.output, alice.name, bob.name
        )
    };
    let policy = s.write_policy("approvals.toml", &format!("{}{}", rule("release", "1h"), rule("brief", "3s")));
    let policy = policy.to_str().unwrap();
    let approvals = s.approvals();
    let env = [("SIGNET_POLICY", policy), ("SIGNET_APPROVALS", approvals.as_str())];
    let mut w1 = s.worker(1, &env);

    // Even a policy that allows it cannot make signet's own state an output location: a job
    // could plant a forged request there.
    let (bucket, prefix) = approvals.trim_start_matches("s3://").split_once('/').unwrap();
    let planted = serde_json::json!({
        "job_id": "plant-1", "key": "release",
        "artifacts": [{"bucket": s.input, "key": "fx/a/hello-1.0-1.noarch.rpm"}],
        "output": {"bucket": bucket, "prefix": format!("{prefix}requests/victim/")},
    });
    s.publish_as(&ci.url, planted.to_string().as_bytes(), "plant-1", Some(&ci.name)).expect("publish");
    let failed = wait_event(&s, "plant-1", event::FAILED, 1);
    assert_eq!(code(&failed[0]), "unauthorized", "{failed:#?}");
    assert!(message(&failed[0]).contains("inside the approvals location"), "{failed:#?}");

    // A rejection: the job fails with approval_rejected and the approver's reason.
    submit(&s, &ci, "rej-1", "release", "out/rej/", &["fx/a/hello-1.0-1.noarch.rpm"], false);
    wait_pending(&s, "rej-1");
    let o = decide(&s, &bob, &["reject", "rej-1", "--reason", "not tested on aarch64"], None);
    assert!(o.status.success(), "{}", text(&o));
    let failed = wait_event(&s, "rej-1", event::FAILED, 1);
    assert_eq!(code(&failed[0]), "approval_rejected");
    assert!(message(&failed[0]).contains(&format!("rejected by {}: not tested on aarch64", bob.name)), "{failed:#?}");

    // An expiry: a 3 s approval_ttl passes without approvals.
    submit(&s, &ci, "exp-1", "brief", "out/exp/", &["fx/b/hello-1.0-1.noarch.rpm"], false);
    let started = Instant::now();
    let failed = wait_event(&s, "exp-1", event::FAILED, 1);
    assert_eq!(code(&failed[0]), "approval_expired", "{failed:#?}");
    assert!(started.elapsed() < Duration::from_secs(60), "expired only after {:?}", started.elapsed());

    // An input replaced after it was hashed: approved, fetched again, checksum_mismatch.
    submit(&s, &ci, "swap-1", "release", "out/swap/", &["fx/swap/hello-1.0-1.noarch.rpm"], false);
    wait_pending(&s, "swap-1");
    s.upload("fx/swap/hello-1.0-1.noarch.rpm", &fx.join("rpm/world-2.0-1.noarch.rpm"));
    let o = decide(&s, &alice, &["approve", "swap-1", "--yes"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed = wait_event(&s, "swap-1", event::FAILED, 1);
    assert_eq!(code(&failed[0]), "checksum_mismatch", "{failed:#?}");
    assert!(s.output_keys("out/swap/").is_empty(), "a replaced input left outputs");

    // A worker killed between the request and the approvals: new workers complete the
    // job, and two approvals racing on two workers sign it once.
    submit(&s, &ci, "kill-1", "release", "out/kill/", &["fx/kill/hello-1.0-1.noarch.rpm"], false);
    let req = wait_pending(&s, "kill-1");
    w1.signal(9);
    w1.wait(10);
    let _w2 = s.worker(2, &env);
    let _w3 = s.worker(3, &env);
    let good = serde_json::to_vec(&ApprovalMessage::approve(&req)).unwrap();
    s.publish_approval_as(&alice.url, &good, Some(&alice.name)).expect("publish");
    s.publish_approval_as(&bob.url, &good, Some(&bob.name)).expect("publish");
    wait_event(&s, "kill-1", event::SUCCEEDED, 1);
    // The second approval is answered too (with the job's end), then nothing more.
    let answered = Instant::now() + Duration::from_secs(30);
    while events_of(&s, "kill-1", event::SUCCEEDED).len() + events_of(&s, "kill-1", event::APPROVAL_REFUSED).len() < 2 {
        assert!(Instant::now() < answered, "the second approval was never answered");
        std::thread::sleep(Duration::from_millis(300));
    }
    let rpm = s.download(&s.output, "out/kill/hello-1.0-1.noarch.rpm");
    accepts("verify_rpm", &[&cert, &rpm]);
    let signed = audit(&s, "kill-1").into_iter().filter(|r| r.outcome == Outcome::Signed).count();
    assert_eq!(signed, 1, "signed {signed} times");

    // Each end is on record, and the log (with the killed worker's open chain) verifies.
    let ends = |job: &str, outcome: Outcome| audit(&s, job).iter().any(|r| r.outcome == outcome);
    assert!(ends("rej-1", Outcome::Rejected) && ends("exp-1", Outcome::Expired), "rejection or expiry not audited");
    assert!(!ends("swap-1", Outcome::Signed) && ends("swap-1", Outcome::Approved));
    assert!(pending(&s).is_empty(), "{:#?}", pending(&s));
    let verify = ok(s.signet().args(["audit", "verify", "--audit", &s.audit]));
    assert!(verify.contains("intact"), "{verify}");
    validate(&s, &[]);
}
