//! What an operator relies on: `/metrics` that counts what the worker did (and passes
//! `promtool`), `/livez` and `/readyz` that follow the broker connection and the drain,
//! workers that exit when idle or after N jobs without losing any, and an audit log that
//! four workers append to without racing each other.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::stack::{Proxy, Stack};
use common::{run, text};

const RPM: &str = "fx/hello-1.0-1.noarch.rpm";
const DEB: &str = "fx/hello_1.0_all.deb";
const BAD_RPM: &str = "fx/cut-1.0-1.noarch.rpm";

/// A free loopback port for the metrics listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` from `port`: (status, body), or None if nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    c.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

fn status(port: u16, path: &str) -> Option<u16> {
    get(port, path).map(|(s, _)| s)
}

/// Polls until `path` answers `want`.
fn wait_status(port: u16, path: &str, want: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = status(port, path);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} answered {got:?}, not {want}, for {secs}s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {l:?}"));
                    let labels = body
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (n.to_owned(), labels)
                }
            };
            Sample { name, labels, value: value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")) }
        })
        .collect()
}

/// The value of `name` with exactly `labels` (0 when absent).
fn value(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    all.iter().find(|s| s.name == name && s.labels == want).map_or(0.0, |s| s.value)
}

fn upload_fixtures(s: &Stack) {
    let fx = s.env.fixtures();
    s.upload(RPM, &fx.join("rpm/hello-1.0-1.noarch.rpm"));
    s.upload(DEB, &fx.join("deb/hello_1.0_all.deb"));
    // An RPM cut inside its header: invalid_artifact.
    let good = std::fs::read(fx.join("rpm/hello-1.0-1.noarch.rpm")).unwrap();
    let cut = s.env.path("cut.rpm");
    std::fs::write(&cut, &good[..200]).unwrap();
    s.upload(BAD_RPM, &cut);
}

/// The broker URL with its host and port replaced by `host_port`.
fn via(url: &str, host_port: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, rest) = rest.rsplit_once('@').unwrap();
    let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
    format!("{scheme}://{auth}@{host_port}/{path}")
}

#[test]
fn metrics_count_what_the_worker_did_and_readiness_follows_the_broker_and_the_drain() {
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    upload_fixtures(&s);
    let broker = s.amqp_url.split_once('@').unwrap().1.split('/').next().unwrap().to_owned();
    let proxy = Proxy::new(&broker);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = via(&s.amqp_url, &format!("127.0.0.1:{}", proxy.port));
    let mut w = s.worker(1, &[("SIGNET_AMQP_URL", url.as_str()), ("SIGNET_METRICS_ADDR", addr.as_str())]);
    wait_status(port, "/readyz", 200, 30);
    assert_eq!(status(port, "/livez"), Some(200));
    assert_eq!(status(port, "/nothing"), Some(404));

    // Two jobs that succeed, one whose RPM is corrupt, one for a key the policy does not name.
    assert_eq!(s.submit_wait("m-rpm", "release", "m/rpm/", &[RPM]).0, 0);
    assert_eq!(s.submit_wait("m-deb", "release", "m/deb/", &[DEB]).0, 0);
    let (code, ev) = s.submit_wait("m-bad", "release", "m/bad/", &[BAD_RPM]);
    assert_eq!((code, ev.unwrap().data.error.unwrap().code.as_str()), (1, "invalid_artifact"));
    let (code, ev) = s.submit_wait("m-denied", "unlisted", "m/denied/", &[RPM]);
    assert_eq!((code, ev.unwrap().data.error.unwrap().code.as_str()), (1, "unauthorized"));
    // The counters are updated once the message is settled, just after the event.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (body, all) = loop {
        let (st, body) = get(port, "/metrics").expect("metrics answer");
        assert_eq!(st, 200);
        let all = samples(&body);
        if value(&all, "signet_jobs_total", &[("outcome", "failed"), ("code", "unauthorized")]) == 1.0
            || Instant::now() > deadline
        {
            break (body, all);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(value(&all, "signet_jobs_total", &[("outcome", "succeeded")]), 2.0, "{body}");
    assert_eq!(value(&all, "signet_jobs_total", &[("outcome", "failed"), ("code", "invalid_artifact")]), 1.0, "{body}");
    assert_eq!(value(&all, "signet_jobs_total", &[("outcome", "failed"), ("code", "unauthorized")]), 1.0, "{body}");
    assert_eq!(value(&all, "signet_signatures_total", &[("format", "rpm")]), 1.0, "{body}");
    assert_eq!(value(&all, "signet_signatures_total", &[("format", "deb")]), 1.0, "{body}");
    // Two signing runs and one denial were recorded.
    assert_eq!(value(&all, "signet_audit_appends_total", &[]), 3.0, "{body}");
    assert_eq!(value(&all, "signet_jobs_in_flight", &[]), 0.0, "{body}");
    assert_eq!(value(&all, "signet_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0, "{body}");
    let count = |outcome| value(&all, "signet_job_duration_seconds_count", &[("outcome", outcome)]);
    assert_eq!((count("succeeded"), count("failed")), (2.0, 2.0), "{body}");
    let inf = value(&all, "signet_job_duration_seconds_bucket", &[("outcome", "succeeded"), ("le", "+Inf")]);
    assert_eq!(inf, 2.0, "{body}");
    assert!(body.contains("# TYPE signet_amqp_reconnects_total counter"), "{body}");
    // Bounded labels only: no job id, no object key, no bucket in any label.
    let allowed = ["outcome", "code", "format", "stage", "version", "le", "operation", "result"];
    for smp in &all {
        assert!(smp.name.starts_with("signet_"), "foreign metric {smp:?}");
        for (k, v) in &smp.labels {
            assert!(allowed.contains(&k.as_str()), "unexpected label {k} in {smp:?}");
            for bad in ["m-rpm", "m-deb", "m-bad", "m-denied", "fx/", "m/", s.input.as_str(), s.output.as_str()] {
                assert!(!v.contains(bad), "label {k}={v:?} carries a per-job value");
            }
        }
    }
    // promtool, Prometheus's own checker, finds nothing to say about it.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup-debian.sh installs the prometheus package)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(), "{}", text(&checked));

    // The broker connection cut: not ready (still live); back: ready again, and signing.
    proxy.down();
    wait_status(port, "/readyz", 503, 15);
    assert_eq!(status(port, "/livez"), Some(200));
    proxy.up();
    wait_status(port, "/readyz", 200, 60);
    assert_eq!(s.submit_wait("m-after", "release", "m/after/", &[RPM]).0, 0);
    let all = samples(&get(port, "/metrics").unwrap().1);
    assert!(value(&all, "signet_amqp_reconnects_total", &[]) >= 1.0);

    // SIGTERM with a job in flight: not ready while it drains, the job still succeeds.
    s.upload_big_rpm(200 << 20);
    s.submit("m-big", "m/big/", &["fx/big-1.0-1.noarch.rpm"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.log_text().lines().any(|l| l.contains("m-big") && l.contains("job started")) {
        assert!(Instant::now() < deadline, "m-big never started:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    w.signal(libc::SIGTERM);
    w.wait_log("shutting down", 10);
    let during_drain = status(port, "/readyz");
    let live_during_drain = status(port, "/livez");
    let code = w.wait(120);
    assert!(!w.log_text().contains("cut_off"), "{}", w.log_text());
    assert_eq!(code, Some(0), "{}", w.log_text());
    assert_eq!((during_drain, live_during_drain), (Some(503), Some(200)), "{}", w.log_text());
    let evs = s.wait_events(60, "m-big's event", |evs| evs.iter().any(|e| e.subject == "m-big"));
    assert!(evs.iter().any(|e| e.subject == "m-big" && e.succeeded()), "{evs:#?}");
    assert_eq!(status(port, "/livez"), None, "the endpoint must go away with the process");
}

#[test]
fn exit_when_idle_and_max_jobs_drain_and_exit_zero() {
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    upload_fixtures(&s);

    // --exit-when-idle 3: every queued job signed, then exit 0 a few seconds later.
    for i in 0..3 {
        s.submit(&format!("idle-{i}"), &format!("idle/{i}/"), &[RPM]);
    }
    let started = Instant::now();
    let mut w = s.worker(1, &[("SIGNET_EXIT_WHEN_IDLE", "3")]);
    let code = w.wait(90);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{}", w.log_text());
    let evs = s.events();
    for i in 0..3 {
        let id = format!("idle-{i}");
        assert!(evs.iter().any(|e| e.subject == id && e.succeeded()), "{id}: {evs:#?}");
    }
    assert!(w.log_text().contains("exiting when idle"), "{}", w.log_text());
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(s.queued_jobs(), 0);

    // --max-jobs 3 with six queued and two jobs at a time (so the broker has a fourth
    // delivery on its way when the third is taken): three signed, three left in the queue
    // and never started, exit 0.
    for i in 0..6 {
        s.submit(&format!("max-{i}"), &format!("max/{i}/"), &[RPM]);
    }
    let mut w2 = s.worker(2, &[("SIGNET_MAX_JOBS", "3"), ("SIGNET_CONCURRENCY", "2")]);
    assert_eq!(w2.wait(90), Some(0), "{}", w2.log_text());
    let evs = s.events();
    let done: Vec<_> = evs.iter().filter(|e| e.subject.starts_with("max-")).collect();
    assert_eq!(done.len(), 3, "{done:#?}");
    assert!(done.iter().all(|e| e.succeeded()), "{done:#?}");
    let started = w2.log_text().lines().filter(|l| l.contains("job started")).count();
    assert_eq!(started, 3, "{}", w2.log_text());
    assert_eq!(s.queued_jobs(), 3, "the other three stay queued");
    assert!(s.dead_letters(0).is_empty());
}

/// `(PUT requests, those answered 412)` to `prefix` in bucket `bucket`, from the S3 server's
/// request log (moto logs every request with its status).
fn s3_log_puts(bucket: &str, prefix: &str) -> (usize, usize) {
    let dir = std::env::var("SIGNET_STACK_DIR").unwrap_or("/var/tmp/signet-stack".into());
    let port =
        std::env::var("SIGNET_S3_ENDPOINT").unwrap().rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let log = std::fs::read_to_string(format!("{dir}/s3-{port}.log")).expect("the S3 server's request log");
    // moto colours the request line of an error answer (`"\x1b[31m\x1b[1mPUT …\x1b[0m" 412`):
    // match the method and path anywhere in the line, the status after the request.
    let needle = format!("PUT /{bucket}/{prefix}");
    let puts: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
    let failed = puts.iter().filter(|l| l.contains(" 412 ")).count();
    (puts.len(), failed)
}

#[test]
fn four_workers_append_to_the_audit_log_without_racing() {
    const JOBS: usize = 200;
    let s = Stack::new();
    s.env.generate("release", "ed25519");
    upload_fixtures(&s);
    let mut workers: Vec<_> = (0..4).map(|n| s.worker(n, &[])).collect();
    for w in &workers {
        w.wait_log("worker consuming", 30);
    }
    let user = s.amqp_user();
    for i in 0..JOBS {
        let id = format!("a-{i:03}");
        let job = serde_json::json!({
            "job_id": id,
            "key": "release",
            "artifacts": [{"bucket": s.input, "key": RPM}],
            "output": {"bucket": s.output, "prefix": format!("a/{i:03}/")},
        });
        s.publish_as(&s.amqp_url, job.to_string().as_bytes(), &id, Some(&user)).expect("publish");
    }
    let evs =
        s.wait_events(300, "all 200 events", |evs| evs.iter().filter(|e| e.subject.starts_with("a-")).count() >= JOBS);
    let mine: Vec<_> = evs.iter().filter(|e| e.subject.starts_with("a-")).collect();
    assert_eq!(mine.len(), JOBS);
    assert!(mine.iter().all(|e| e.succeeded()), "{:#?}", mine.iter().find(|e| !e.succeeded()));
    for w in &mut workers {
        w.signal(libc::SIGTERM);
    }
    for w in &mut workers {
        assert_eq!(w.wait(60), Some(0), "{}", w.log_text());
    }

    // What the audit log cost, as the S3 server saw it.
    let prefix = s.audit.trim_start_matches("s3://signet-audit/");
    let (puts, failed) = s3_log_puts("signet-audit", prefix);
    let per_job = puts as f64 / JOBS as f64;
    println!("audit: {puts} PUTs for {JOBS} jobs ({per_job:.3} per job), {failed} failed a precondition");
    assert!(per_job <= 1.2, "{puts} audit PUTs for {JOBS} jobs");
    assert_eq!(failed, 0, "no append may lose a race");

    // Every chain intact, one record per job, each worker's chain closed.
    let verify = || run(s.signet().args(["audit", "verify"]).env("SIGNET_AUDIT", &s.audit));
    let out = verify();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(said.contains(&format!(": {JOBS} records in ")) && said.contains("all intact"), "{said}");
    let chains: Vec<&str> = said.lines().filter(|l| l.trim_start().starts_with("chain ")).collect();
    assert!(chains.len() >= 2 && chains.len() <= 4, "{said}");
    assert!(chains.iter().all(|l| l.contains(", closed,")), "{said}");

    // Tampering in any chain is found and named: an edit in the middle, the newest record
    // of a closed chain removed.
    let records = s.audit_records();
    let name_of = |key: &str| key.split("/chains/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let mut by_chain: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (k, b) in records {
        by_chain.entry(name_of(&k)).or_default().push((k, b));
    }
    let (chain, recs) = by_chain.iter().max_by_key(|(_, r)| r.len()).unwrap();
    assert!(recs.len() >= 3);
    let (key2, original) = recs[1].clone();
    let put = |key: &str, body: &[u8]| s.put_audit_object(key, body);
    let edited = String::from_utf8(original.clone()).unwrap().replacen("\"job_id\":\"a-", "\"job_id\":\"x-", 1);
    put(&key2, edited.as_bytes());
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains(&format!("chain {chain}: record 2 ({key2}) was edited")), "{said}");
    put(&key2, &original);
    assert!(verify().status.success());
    let (last_key, _) = recs.last().unwrap();
    s.rt.block_on(s.store.client().delete_object().bucket("signet-audit").key(last_key).send()).unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains(&format!("chain {chain}: index record")) && said.contains("removed from its end"), "{said}");
}
