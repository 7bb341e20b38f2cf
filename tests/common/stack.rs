//! The real broker and S3 server the worker tests run against (started by
//! `localstack/start.sh`, which `scripts/test.sh` runs): each test gets its own namespace
//! (queues, exchanges) and buckets, so tests run in parallel without seeing each other.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use signet::event::Event;
use signet::queue::Topology;
use signet::store::ObjectStore;
use signet::store::s3::S3Store;

use super::{Env, ok, run};

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with ./scripts/test.sh (or `eval \"$(localstack/start.sh)\"` first)")
    })
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Keys the default test policy lets the broker's default user (guest) sign with.
pub const POLICY_KEYS: &[&str] = &["release", "local", "no-such-key"];

/// A test's own slice of the broker and the object store.
pub struct Stack {
    pub env: Env,
    pub ns: String,
    /// The policy file workers get unless a test passes its own SIGNET_POLICY.
    pub policy: PathBuf,
    /// This test's audit log: s3://signet-audit/NS/.
    pub audit: String,
    pub amqp_url: String,
    pub s3_endpoint: String,
    pub input: String,
    pub output: String,
    pub store: S3Store,
    pub rt: tokio::runtime::Runtime,
}

impl Stack {
    pub fn new() -> Self {
        let amqp_url = need("SIGNET_AMQP_URL");
        let s3_endpoint = need("SIGNET_S3_ENDPOINT");
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let rt = rt();
        let store = rt.block_on(S3Store::from_env(Some(&s3_endpoint)));
        let env = Env::new();
        let policy = env.path("policy.toml");
        let stack = Stack {
            env,
            ns: format!("t-{id}"),
            policy,
            audit: format!("s3://signet-audit/t-{id}/"),
            amqp_url,
            s3_endpoint,
            input: format!("in-{id}"),
            output: format!("out-{id}"),
            store,
            rt,
        };
        for b in [&stack.input, &stack.output] {
            stack.rt.block_on(stack.store.client().create_bucket().bucket(b.as_str()).send()).expect("create bucket");
        }
        let rules: String = POLICY_KEYS
            .iter()
            .map(|k| {
                format!(
                    "[keys.{k}]\nproducers = [{user:?}]\nsources = [\"{i}/*\"]\noutputs = [\"{o}/*\"]\n\
                     formats = [\"rpm\", \"deb\", \"detached\", \"apt-release\"]\nallow_mixed_formats = true\n\n",
                    user = stack.amqp_user(),
                    i = stack.input,
                    o = stack.output
                )
            })
            .collect();
        std::fs::write(&stack.policy, rules).expect("write policy");
        stack
    }

    /// A KMS client for the test's own KMS calls, at `endpoint` (moto serves KMS beside S3).
    pub fn kms_client(&self, endpoint: &str) -> aws_sdk_kms::Client {
        let shared = self.rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
        let conf = aws_sdk_kms::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    /// This test's approvals location (beside its audit log, never inside it).
    pub fn approvals(&self) -> String {
        format!("{}-approvals/", self.audit.trim_end_matches('/'))
    }

    /// The user name in the broker URL (guest).
    pub fn amqp_user(&self) -> String {
        signet::queue::amqp_user(&self.amqp_url).expect("user in SIGNET_AMQP_URL")
    }

    /// The broker URL with other credentials.
    pub fn amqp_url_as(&self, user: &str, password: &str) -> String {
        let (scheme, rest) = self.amqp_url.split_once("://").expect("amqp URL");
        let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        format!("{scheme}://{user}:{password}@{host}")
    }

    /// Writes a policy file into the scratch dir; returns its path.
    pub fn write_policy(&self, name: &str, text: &str) -> PathBuf {
        let p = self.env.path(name);
        std::fs::write(&p, text).expect("write policy");
        p
    }

    /// Reads every object of this test's audit log: (key, bytes) in key order.
    pub fn audit_objects(&self) -> Vec<(String, Vec<u8>)> {
        let log = signet::audit::AuditLog::new(&self.audit, "test").unwrap();
        self.rt.block_on(log.read_all(&self.store)).expect("read audit log")
    }

    /// The audit records of this test's workers' chains (not the index): (key, bytes), in
    /// order within each chain.
    pub fn audit_records(&self) -> Vec<(String, Vec<u8>)> {
        self.audit_objects().into_iter().filter(|(k, _)| k.contains("/chains/")).collect()
    }

    /// Overwrites the audit object `key` with `body` (to tamper with the log).
    pub fn put_audit_object(&self, key: &str, body: &[u8]) {
        let bucket = self.audit.trim_start_matches("s3://").split('/').next().unwrap();
        self.rt
            .block_on(self.store.put_bytes(bucket, key, body.to_vec(), "application/json", false))
            .expect("put audit object");
    }

    /// `signet` with this stack's namespace, vault and endpoints.
    pub fn signet(&self) -> Command {
        let mut c = self.env.signet();
        c.env("SIGNET_NAMESPACE", &self.ns)
            .env("SIGNET_AMQP_URL", &self.amqp_url)
            .env("SIGNET_S3_ENDPOINT", &self.s3_endpoint)
            .env("SIGNET_LOG_FORMAT", "json");
        c
    }

    pub fn upload(&self, key: &str, file: &Path) {
        self.rt
            .block_on(self.store.put_file(&self.input, key, file, "application/octet-stream", false))
            .expect("upload");
    }

    /// Downloads `bucket/key` into the scratch dir; returns the path.
    pub fn download(&self, bucket: &str, key: &str) -> PathBuf {
        let dest = self.env.path(&format!("dl/{key}"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        self.rt
            .block_on(self.store.get_to_file(bucket, key, &dest, u64::MAX))
            .unwrap_or_else(|e| panic!("download {bucket}/{key}: {e}"));
        dest
    }

    /// Keys under `prefix` in the output bucket.
    pub fn output_keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.store.client().list_objects_v2().bucket(&self.output).prefix(prefix).send())
            .expect("list");
        let mut keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
        keys.sort();
        keys
    }

    /// Starts a worker process (logs as JSON lines to `worker-N.log`).
    pub fn worker(&self, n: usize, extra_env: &[(&str, &str)]) -> Worker {
        self.worker_with_endpoint(n, &self.s3_endpoint, extra_env)
    }

    pub fn worker_with_endpoint(&self, n: usize, endpoint: &str, extra_env: &[(&str, &str)]) -> Worker {
        let log = self.env.path(&format!("worker-{n}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = self.signet();
        cmd.arg("worker")
            .env("SIGNET_S3_ENDPOINT", endpoint)
            .env("SIGNET_WORK_DIR", self.env.path(&format!("work-{n}")))
            .env("SIGNET_POLICY", &self.policy)
            .env("SIGNET_AUDIT", &self.audit)
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file);
        Worker { child: Some(cmd.spawn().expect("spawn worker")), log }
    }

    /// Uploads an RPM, a DEB, a tarball and an APT Release, has a worker started with
    /// `worker_env` sign them as job `job_id` with key `release`, and checks every output
    /// with the real verifiers against `cert` (rpmkeys, debsig-verify, gpg, sqv,
    /// sha256sum, apt-get update); tampered copies must fail. Returns the worker.
    pub fn sign_every_format_and_verify(&self, job_id: &str, worker_env: &[(&str, &str)], cert: &Path) -> Worker {
        let fx = self.env.fixtures();
        let files = [
            ("fx/hello-1.0-1.noarch.rpm", "rpm/hello-1.0-1.noarch.rpm", "auto"),
            ("fx/hello_1.0_all.deb", "deb/hello_1.0_all.deb", "auto"),
            ("fx/hello-1.0.tar.gz", "files/hello-1.0.tar.gz", "detached"),
            ("fx/dists/stable/Release", "apt/Release", "apt-release"),
        ];
        for (k, f, _) in files {
            self.upload(k, &fx.join(f));
        }
        let w = self.worker(1, worker_env);
        let arts: Vec<_> =
            files.iter().map(|(k, _, f)| serde_json::json!({"bucket": self.input, "key": k, "format": f})).collect();
        let prefix = format!("{job_id}/");
        let job = serde_json::json!({
            "job_id": job_id, "key": "release", "artifacts": arts,
            "output": {"bucket": self.output, "prefix": prefix},
        });
        self.publish_raw(&serde_json::to_vec(&job).unwrap(), job_id);
        let evs = self.wait_events(120, &format!("{job_id} to end"), |e| e.iter().any(|e| e.data.job_id == job_id));
        let ev = evs.iter().find(|e| e.data.job_id == job_id).unwrap();
        assert!(ev.succeeded(), "{ev:#?}");

        let out = self.env.path(&format!("out-{job_id}"));
        std::fs::create_dir_all(&out).unwrap();
        for key in self.output_keys(&prefix) {
            std::fs::copy(self.download(&self.output, &key), out.join(key.trim_start_matches(&prefix))).unwrap();
        }
        let p = |n: &str| out.join(n);
        super::accepts("verify_rpm", &[cert, &p("hello-1.0-1.noarch.rpm")]);
        super::accepts("verify_deb", &[cert, &p("hello_1.0_all.deb")]);
        super::accepts("verify_gpg", &[cert, &p("hello-1.0.tar.gz.asc"), &p("hello-1.0.tar.gz")]);
        super::accepts("verify_sqv", &[cert, &p("SHA256SUMS.asc"), &p("SHA256SUMS")]);
        super::accepts("verify_gpg", &[cert, &p("InRelease")]);
        super::accepts("verify_sha256sums", &[&out]);
        let apt = fx.join("apt");
        std::fs::copy(p("InRelease"), apt.join("InRelease")).unwrap();
        super::accepts("verify_apt_repo", &[cert, &apt]);
        let bad = super::tampered(&p("hello-1.0-1.noarch.rpm"), &self.env.path(&format!("bad-{job_id}.rpm")), -1);
        super::rejects("verify_rpm", &[cert, &bad]);
        let bad = super::tampered(&p("hello-1.0.tar.gz"), &self.env.path(&format!("bad-{job_id}.tar.gz")), 10);
        super::rejects("verify_gpg", &[cert, &p("hello-1.0.tar.gz.asc"), &bad]);
        w
    }

    /// Revokes `name`'s key `fpr` with `signet` (a `signet` command with whatever the key
    /// needs in its environment), checks that gpg shows the export revoked, and that job
    /// `job_id` with the key then fails `key_unavailable` saying so.
    pub fn revoke_and_check(&self, mut signet: Command, name: &str, fpr: &str, job_id: &str) {
        ok(signet.args(["keys", "revoke", name, fpr, "--reason", "compromised", "--message", "test"]));
        assert!(ok(self.env.signet().args(["keys", "list"])).contains("revoked"));
        let exported = self.env.export(name);
        let home = self.env.path(&format!("gnupg-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        ok(Command::new("chmod").arg("700").arg(&home));
        ok(Command::new("gpg").arg("--homedir").arg(&home).args(["--batch", "--import"]).arg(&exported));
        let keys = ok(Command::new("gpg").arg("--homedir").arg(&home).args(["--with-colons", "--list-keys"]));
        assert!(keys.lines().any(|l| l.starts_with("pub:r:")), "gpg does not show the key revoked:\n{keys}");
        let (code, ev) = self.submit_wait(job_id, name, &format!("{job_id}/"), &["fx/hello-1.0.tar.gz"]);
        let ev = ev.expect("an event");
        let err = ev.data.error.as_ref().expect("a failure");
        assert_eq!((code, err.code.as_str()), (1, "key_unavailable"), "{ev:#?}");
        assert!(err.message.contains("revoked"), "{ev:#?}");
    }

    /// `signet submit --wait` for one job; returns (exit code, event).
    pub fn submit_wait(&self, job_id: &str, key: &str, prefix: &str, artifacts: &[&str]) -> (i32, Option<Event>) {
        self.submit_wait_as(&self.amqp_url, job_id, key, prefix, artifacts)
    }

    /// `submit_wait` connecting with `url` (another broker user).
    pub fn submit_wait_as(
        &self,
        url: &str,
        job_id: &str,
        key: &str,
        prefix: &str,
        artifacts: &[&str],
    ) -> (i32, Option<Event>) {
        let mut c = self.submit_cmd(job_id, key, prefix, artifacts);
        c.env("SIGNET_AMQP_URL", url);
        c.args(["--wait", "--timeout", "120"]);
        let o = run(&mut c);
        let ev = String::from_utf8_lossy(&o.stdout).lines().find_map(|l| serde_json::from_str(l).ok());
        (o.status.code().unwrap_or(-1), ev)
    }

    /// `signet submit` without waiting (the broker confirmed the job when it returns).
    pub fn submit(&self, job_id: &str, prefix: &str, artifacts: &[&str]) {
        ok(&mut self.submit_cmd(job_id, "release", prefix, artifacts));
    }

    fn submit_cmd(&self, job_id: &str, key: &str, prefix: &str, artifacts: &[&str]) -> Command {
        let mut c = self.signet();
        c.args([
            "submit",
            "--key",
            key,
            "--output-bucket",
            &self.output,
            "--output-prefix",
            prefix,
            "--job-id",
            job_id,
        ]);
        for a in artifacts {
            c.arg(format!("s3://{}/{a}", self.input));
        }
        c
    }

    /// Builds an RPM with a `bytes`-sized payload and uploads it as `fx/big-1.0-1.noarch.rpm`.
    pub fn upload_big_rpm(&self, bytes: u64) {
        let dir = self.env.path("big");
        ok(Command::new("bash")
            .arg(super::repo().join("tests/support/fixtures.sh"))
            .arg("rpm")
            .arg(&dir)
            .args(["big", &bytes.to_string()]));
        self.upload("fx/big-1.0-1.noarch.rpm", &dir.join("big-1.0-1.noarch.rpm"));
    }

    /// Every event of this namespace so far (from the events log stream).
    pub fn events(&self) -> Vec<Event> {
        let out = ok(self.signet().arg("events"));
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event {l}: {e}"))).collect()
    }

    /// Waits until `pred` holds for the event list, or panics after `secs`.
    pub fn wait_events(&self, secs: u64, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let evs = self.events();
            if pred(&evs) {
                return evs;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; events so far: {evs:#?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn connect(&self) -> Connection {
        self.rt.block_on(Connection::connect(&self.amqp_url, ConnectionProperties::default())).expect("amqp connect")
    }

    /// Publishes a raw message to the jobs queue, as any AMQP client could, with the
    /// connection's user as `user_id`.
    pub fn publish_raw(&self, body: &[u8], message_id: &str) {
        let user = self.amqp_user();
        self.publish_as(&self.amqp_url, body, message_id, Some(&user)).expect("publish");
    }

    /// Publishes a raw message connecting with `url`, with `user_id` as given; Err if the
    /// broker refuses it (e.g. a `user_id` that is not the connection's user).
    pub fn publish_as(&self, url: &str, body: &[u8], message_id: &str, user_id: Option<&str>) -> Result<(), String> {
        self.publish_to(url, &format!("{}.jobs", self.ns), body, message_id, user_id)
    }

    /// Publishes a raw approval message to `NS.approvals` as `publish_as` does.
    pub fn publish_approval_as(&self, url: &str, body: &[u8], user_id: Option<&str>) -> Result<(), String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.publish_to(url, &format!("{}.approvals", self.ns), body, &id, user_id)
    }

    /// Publishes a raw message to `queue` connecting with `url`.
    pub fn publish_to(
        &self,
        url: &str,
        queue: &str,
        body: &[u8],
        message_id: &str,
        user_id: Option<&str>,
    ) -> Result<(), String> {
        let conn = self
            .rt
            .block_on(Connection::connect(url, ConnectionProperties::default()))
            .map_err(|e| format!("connect: {e}"))?;
        let r = self.rt.block_on(async {
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            Topology::new(&self.ns).declare(&ch).await.map_err(|e| e.to_string())?;
            ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
            let mut props = BasicProperties::default().with_delivery_mode(2).with_message_id(message_id.into());
            if let Some(u) = user_id {
                props = props.with_user_id(u.into());
            }
            let confirm = ch
                .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            if confirm.is_ack() { Ok(()) } else { Err(format!("broker nacked: {confirm:?}")) }
        });
        let _ = self.rt.block_on(conn.close(200, "bye".into()));
        r
    }

    /// The dead letters of the jobs so far: drains the dead-letter queue until it has given
    /// `expected` messages (15 s at most), then once more after a pause, so that a test sees
    /// more than it expects as well as fewer. A worker publishes a job's event before it
    /// rejects the message, so a test that has seen the event must still wait for the
    /// dead letter.
    pub fn dead_letters(&self, expected: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut ids = self.drain_dead_letters();
        while ids.len() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            ids.extend(self.drain_dead_letters());
        }
        std::thread::sleep(Duration::from_millis(300));
        ids.extend(self.drain_dead_letters());
        ids
    }

    /// Drains the dead-letter queue; returns the message ids found.
    fn drain_dead_letters(&self) -> Vec<String> {
        let conn = self.connect();
        self.rt.block_on(async {
            let ch = conn.create_channel().await.unwrap();
            let mut ids = Vec::new();
            while let Some(m) = ch
                .basic_get(format!("{}.jobs.dead", self.ns).as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                ids.push(m.delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default());
            }
            let _ = conn.close(200, "bye".into()).await;
            ids
        })
    }

    /// Messages waiting in the jobs queue (declared passively).
    pub fn queued_jobs(&self) -> u32 {
        let conn = self.connect();
        self.rt.block_on(async {
            let ch = conn.create_channel().await.unwrap();
            let q = ch
                .queue_declare(
                    format!("{}.jobs", self.ns).as_str().into(),
                    lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                    Default::default(),
                )
                .await
                .unwrap();
            let n = q.message_count();
            let _ = conn.close(200, "bye".into()).await;
            n
        })
    }
}

/// A running worker process.
pub struct Worker {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Worker {
    /// The worker's peak resident set so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("worker status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmHWM in kB")
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "worker log never said {needle:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits for exit; returns the exit code (None if killed by a signal).
    pub fn wait(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                self.child = None;
                return st.code();
            }
            assert!(Instant::now() < deadline, "worker did not exit within {secs}s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP proxy in front of the S3 server that the test can switch off (connections
/// refused and cut) and on again, to stage an outage without losing the server's data.
pub struct Proxy {
    pub port: u16,
    /// Bytes the clients sent through to the server (requests and their bodies).
    sent: Arc<std::sync::atomic::AtomicU64>,
    up: Arc<AtomicBool>,
    listener: Arc<Mutex<Option<TcpListener>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    target: String,
}

impl Proxy {
    pub fn new(target_url: &str) -> Self {
        let target = target_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let p = Proxy {
            port,
            sent: Arc::default(),
            up: Arc::new(AtomicBool::new(false)),
            listener: Arc::new(Mutex::new(None)),
            conns: Arc::new(Mutex::new(Vec::new())),
            target,
        };
        p.start_with(listener);
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes sent to the server through the proxy so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    fn start_with(&self, listener: TcpListener) {
        self.up.store(true, Ordering::SeqCst);
        *self.listener.lock().unwrap() = Some(listener.try_clone().unwrap());
        let (up, conns, target, sent) = (self.up.clone(), self.conns.clone(), self.target.clone(), self.sent.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !up.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&target) else { continue };
                conns.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let upstream = [(client.try_clone().unwrap(), server.try_clone().unwrap(), Some(sent.clone()))];
                for (mut from, mut to, count) in upstream.into_iter().chain([(server, client, None)]) {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if let Some(c) = &count {
                                c.fetch_add(n as u64, Ordering::SeqCst);
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
    }

    /// Refuses new connections and cuts open ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(l) = self.listener.lock().unwrap().take() {
            // Wake the accept loop so it sees `up == false`, then drop the socket.
            let _ = TcpStream::connect(l.local_addr().unwrap());
            drop(l);
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again on the same port.
    pub fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot rebind proxy port: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        self.start_with(listener);
    }
}

/// Creates (or resets) broker user `name` with a fresh password and full permissions on
/// the default vhost; returns the password.
pub fn rabbit_user(name: &str) -> String {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let ctl = |args: &[&str]| {
        run(Command::new("bash").arg(super::repo().join("localstack/rabbitmq.sh")).arg("ctl").arg("-q").args(args))
    };
    let add = ctl(&["add_user", name, &password]);
    if !add.status.success() {
        ok(Command::new("bash").arg(super::repo().join("localstack/rabbitmq.sh")).args([
            "ctl",
            "-q",
            "change_password",
            name,
            &password,
        ]));
    }
    let perms = ctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
    assert!(perms.status.success(), "set_permissions {name}: {}", super::text(&perms));
    password
}
