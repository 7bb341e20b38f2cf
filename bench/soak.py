#!/usr/bin/env python3
"""Soak and fault harness: N jobs through 3 workers under overlapping faults.

    bench/soak.sh [--jobs 10000] [--workers 3] [--kill-every 4] [--outage 60] ...

Run through bench/soak.sh, which builds signet and starts the local stack. Jobs carry 1-3
small RPMs, DEBs and plain files; a few percent are bad jobs with known expected codes.
While the workers run, the harness injects, overlapping:
  - a SIGKILL of a random worker every --kill-every seconds, restarted at once (worker 1 is
    never killed: it is the leak probe whose RSS and open fds are compared at the end);
  - one restart of the broker (a private RabbitMQ node of its own, port --amqp-port);
  - one S3 outage of --outage seconds and a burst of short ones (a TCP proxy in front of the
    S3 server, switched off and on);
  - once, a full work directory (worker 2's work dir is a small tmpfs, filled for a while).
At the end it checks every job's events, every output set against its SHA256SUMS, a sample
with rpmkeys, debsig-verify and gpg, the audit log, the dead-letter queue and the leak
probe, prints a table, and exits 1 on any loss or wrong outcome.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import boto3
import pika
from botocore.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERIFY = os.path.join(REPO, "tests/support/verifiers.sh")


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Proxy:
    """A TCP proxy that can be switched off (refusing and cutting connections) and on."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.up = True
        self.conns = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            c, _ = self.sock.accept()
            if not self.up:
                c.close()
                continue
            try:
                s = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, s]
            left = [2]
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b, c, s, left), daemon=True).start()

    def _pipe(self, a, b, c, s, left):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self.lock:
            left[0] -= 1
            if left[0] == 0:
                for x in (c, s):
                    x.close()
                    if x in self.conns:
                        self.conns.remove(x)

    def set(self, up):
        self.up = up
        if not up:
            with self.lock:
                for c in self.conns:
                    try:
                        c.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


def proc_stats(pid):
    """(RSS KiB, open fds) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=4.0)
    ap.add_argument("--outage", type=float, default=60.0)
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--bad-percent", type=float, default=3.0)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--amqp-port", type=int, default=5673)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--deadline", type=float, default=0, help="seconds (default: 60 + jobs/4)")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--signet", default=os.environ.get("SIGNET_SOAK_BIN", os.path.join(REPO, "target/release/signet")))
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    deadline = args.deadline or 60 + args.jobs / 4
    run = f"soak-{int(time.time())}-{os.getpid()}"
    work = tempfile.mkdtemp(prefix="signet-soak-")
    s3_port = int(os.environ["SIGNET_S3_ENDPOINT"].rsplit(":", 1)[1].strip("/"))
    s3 = boto3.client("s3", endpoint_url=os.environ["SIGNET_S3_ENDPOINT"],
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
    bucket_in, bucket_out = f"{run}-in", f"{run}-out"
    for b in (bucket_in, bucket_out):
        s3.create_bucket(Bucket=b)
    amqp_url = f"amqp://guest:guest@127.0.0.1:{args.amqp_port}/%2f"
    rmq = os.path.join(REPO, "localstack/rabbitmq.sh")
    rmq_env = dict(os.environ, SIGNET_AMQP_PORT=str(args.amqp_port))
    subprocess.run(["bash", rmq, "start"], env=rmq_env, check=True, stdout=subprocess.DEVNULL)

    env = dict(os.environ, SIGNET_VAULT=f"dir:{work}/vault", SIGNET_VAULT_PASSPHRASE_FILE=f"{work}/passphrase",
               SIGNET_AMQP_URL=amqp_url, SIGNET_NAMESPACE=run, RUST_LOG="info")
    with open(f"{work}/passphrase", "w") as f:
        f.write("soak passphrase\n")
    subprocess.run([args.signet, "keys", "generate", "soak", "--algo", "ed25519"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cert = f"{work}/soak.asc"
    with open(cert, "w") as f:
        subprocess.run([args.signet, "keys", "export", "soak"], env=env, check=True, stdout=f)
    with open(f"{work}/policy.toml", "w") as f:
        f.write(f'[keys.soak]\nproducers = ["guest"]\nsources = ["{bucket_in}/*"]\noutputs = ["{bucket_out}/*"]\n'
                f'formats = ["rpm", "deb", "detached"]\nallow_mixed_formats = true\n')

    # Artifacts: the test fixtures, and a corrupt RPM for bad jobs.
    fx = f"{work}/fx"
    subprocess.run(["bash", os.path.join(REPO, "tests/support/fixtures.sh"), "all", fx], check=True,
                   stdout=subprocess.DEVNULL)
    pool = ["rpm/hello-1.0-1.noarch.rpm", "rpm/world-2.0-1.noarch.rpm", "deb/hello_1.0_all.deb",
            "deb/hello-gz_1.0_all.deb", "files/hello-1.0.tar.gz"]
    for rel in pool:
        s3.upload_file(f"{fx}/{rel}", bucket_in, f"fx/{os.path.basename(rel)}")
    with open(f"{fx}/rpm/hello-1.0-1.noarch.rpm", "rb") as f:
        corrupt = bytearray(f.read())
    corrupt[96 + 8:96 + 12] = (0x7fffffff).to_bytes(4, "big")
    s3.put_object(Bucket=bucket_in, Key="bad/corrupt-1.0-1.noarch.rpm", Body=bytes(corrupt))

    # Jobs: (id, body, expected) with expected None for good jobs, else the failure code.
    jobs = []
    bad_kinds = [("invalid_artifact", "corrupt"), ("artifact_missing", "missing"), ("unauthorized", "key"),
                 ("invalid_job", "json")]
    for i in range(args.jobs):
        jid = f"j{i:05d}"
        names = rnd.sample(pool, rnd.randint(1, 3))
        arts = [{"bucket": bucket_in, "key": f"fx/{os.path.basename(n)}"} for n in names]
        job = {"job_id": jid, "key": "soak", "artifacts": arts, "output": {"bucket": bucket_out, "prefix": f"{jid}/"}}
        expected = None
        if rnd.random() * 100 < args.bad_percent:
            expected, kind = rnd.choice(bad_kinds)
            if kind == "corrupt":
                job["artifacts"] = [{"bucket": bucket_in, "key": "bad/corrupt-1.0-1.noarch.rpm", "format": "rpm"}]
            elif kind == "missing":
                job["artifacts"] = [{"bucket": bucket_in, "key": "bad/no-such-object.rpm"}]
            elif kind == "key":
                job["key"] = "not-in-policy"
        body = json.dumps(job).encode()
        if expected == "invalid_job":
            body = body[:-7] + b"\x00garbage"
        jobs.append((jid, body, expected))
    expected = {j: e for j, _, e in jobs}

    # Topology (as a worker declares it) and an observer queue for every event.
    params = pika.URLParameters(amqp_url)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    subprocess.run([args.signet, "events"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
    observer = f"{run}.observer"
    ch.queue_declare(observer, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(observer, f"{run}.events", "#")
    ch.confirm_delivery()
    t0 = time.time()
    for jid, body, _ in jobs:
        ch.basic_publish("", f"{run}.jobs", body, pika.BasicProperties(
            delivery_mode=2, message_id=jid, user_id="guest", content_type="application/json"))
    conn.close()
    log(f"{len(jobs)} jobs published with confirms in {time.time() - t0:.1f}s "
        f"({sum(1 for e in expected.values() if e)} bad)")

    # Workers, behind the S3 proxy.
    proxy = Proxy(s3_port)
    tmpfs = f"{work}/work-2"
    os.makedirs(tmpfs)
    have_tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", tmpfs]).returncode == 0
    mounted = [have_tmpfs]
    wenv = dict(env, SIGNET_S3_ENDPOINT=f"http://127.0.0.1:{proxy.port}", SIGNET_POLICY=f"{work}/policy.toml",
                SIGNET_AUDIT=f"s3://signet-audit/{run}/", SIGNET_CONCURRENCY=str(args.concurrency),
                SIGNET_SHUTDOWN_TIMEOUT="5")
    workers = {}
    restarts = {n: 0 for n in range(1, args.workers + 1)}

    def cleanup():
        for w in workers.values():
            if w.poll() is None:
                w.kill()
        if mounted[0]:
            subprocess.run(["umount", "-l", tmpfs], stderr=subprocess.DEVNULL)
            mounted[0] = False

    import atexit
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))

    def start(n):
        d = f"{work}/work-{n}"
        os.makedirs(d, exist_ok=True)
        with open(f"{work}/worker-{n}.log", "ab") as logf:
            workers[n] = subprocess.Popen([args.signet, "worker"], env=dict(wenv, SIGNET_WORK_DIR=d),
                                          stdout=subprocess.DEVNULL, stderr=logf)

    for n in range(1, args.workers + 1):
        start(n)

    # Events, read as they come (the observer queue is durable: a broker restart keeps them).
    events = {}
    ev_lock = threading.Lock()
    stop = threading.Event()

    def observe():
        while not stop.is_set():
            try:
                c = pika.BlockingConnection(params)
                cch = c.channel()
                for method, _, body in cch.consume(observer, inactivity_timeout=1):
                    if stop.is_set():
                        break
                    if method is None:
                        continue
                    ev = json.loads(body)
                    with ev_lock:
                        events.setdefault(ev["data"]["job_id"], []).append(ev)
                    cch.basic_ack(method.delivery_tag)
                c.close()
            except Exception:
                time.sleep(1)

    threading.Thread(target=observe, daemon=True).start()

    def done():
        with ev_lock:
            return sum(1 for j in expected if j in events)

    faults = {"kills": 0, "broker restarts": 0, "s3 outages": 0, "s3 outage seconds": 0.0, "disk full": 0}
    probe = {}

    def wait_for(n_done, limit):
        end = time.time() + limit
        while done() < n_done and time.time() < end:
            time.sleep(0.5)

    def killer():
        others = [n for n in workers if n != 1]
        while not stop.is_set() and others:
            time.sleep(args.kill_every)
            if stop.is_set():
                break
            n = rnd.choice(others)
            workers[n].kill()
            workers[n].wait()
            faults["kills"] += 1
            restarts[n] += 1
            start(n)

    def schedule():
        n = args.jobs
        wait_for(min(200, n // 10), deadline)
        time.sleep(2)
        probe["warm"] = proc_stats(workers[1].pid)
        log(f"warm-up: {done()} jobs done; leak probe rss={probe['warm'][0]} KiB fds={probe['warm'][1]}")
        threading.Thread(target=killer, daemon=True).start()
        wait_for(n * 15 // 100, deadline)
        log(f"S3 outage of {args.outage:.0f}s at {done()} jobs")
        proxy.set(False)
        time.sleep(args.outage)
        proxy.set(True)
        faults["s3 outages"] += 1
        faults["s3 outage seconds"] += args.outage
        wait_for(n * 25 // 100, deadline)
        log(f"broker restart at {done()} jobs")
        # A producer submitting across the restart: its confirmed publish retries.
        sub = subprocess.Popen([args.signet, "submit", "--key", "soak", "--output-bucket", bucket_out,
                                "--output-prefix", "late/", "--job-id", "late-submit",
                                f"s3://{bucket_in}/fx/hello-1.0-1.noarch.rpm"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        subprocess.run(["bash", rmq, "stop"], env=rmq_env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(3)
        subprocess.run(["bash", rmq, "start"], env=rmq_env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        faults["broker restarts"] += 1
        probe["late_submit"] = sub.wait(timeout=180)
        expected["late-submit"] = None
        wait_for(n * 40 // 100, deadline)
        log(f"{args.bursts} short S3 outages at {done()} jobs")
        for _ in range(args.bursts):
            proxy.set(False)
            time.sleep(2)
            proxy.set(True)
            faults["s3 outages"] += 1
            faults["s3 outage seconds"] += 2
            time.sleep(rnd.uniform(1, 4))
        wait_for(n * 55 // 100, deadline)
        if have_tmpfs:
            log(f"work dir of worker 2 full at {done()} jobs")
            fill = f"{tmpfs}/filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={fill}", "bs=1M", "count=64"], stderr=subprocess.DEVNULL)
            time.sleep(8)
            os.remove(fill)
            faults["disk full"] += 1

    sched = threading.Thread(target=schedule, daemon=True)
    sched.start()
    sched.join(deadline)
    wait_for(len(expected), max(0, deadline - (time.time() - t0)))
    stop.set()
    elapsed = time.time() - t0
    probe["end"] = proc_stats(workers[1].pid) if workers[1].poll() is None else (0, 0)
    time.sleep(1)
    for w in workers.values():
        w.send_signal(signal.SIGTERM)
    for w in workers.values():
        try:
            w.wait(timeout=20)
        except subprocess.TimeoutExpired:
            w.kill()
    cleanup()
    log(f"all events in after {elapsed:.0f}s" if done() >= len(expected) else "deadline passed")

    # Checks.
    problems = []
    lost = [j for j in expected if j not in events]
    wrong = []
    for j, exp in expected.items():
        evs = events.get(j, [])
        if not evs:
            continue
        kinds = {e["type"] for e in evs}
        if exp is None:
            if "signet.job.failed" in kinds:
                wrong.append((j, [e["data"].get("error") for e in evs if e["data"].get("error")]))
        else:
            codes = {(e["data"].get("error") or {}).get("code") for e in evs}
            if codes != {exp}:
                wrong.append((j, sorted(c or "succeeded" for c in codes)))
    # Dead letters.
    c = pika.BlockingConnection(params)
    cch = c.channel()
    dead = []
    while True:
        m, props, _ = cch.basic_get(f"{run}.jobs.dead", auto_ack=True)
        if m is None:
            break
        dead.append(props.message_id)
    c.close()
    good_dead = [d for d in dead if expected.get(d, "x") is None]

    # Output sets: every SHA256SUMS line against the stored object.
    incomplete = []
    good = sorted(j for j, e in expected.items() if e is None and j in events)

    def check_set(j):
        prefix = "late/" if j == "late-submit" else f"{j}/"
        try:
            sums = s3.get_object(Bucket=bucket_out, Key=f"{prefix}SHA256SUMS")["Body"].read().decode()
            s3.head_object(Bucket=bucket_out, Key=f"{prefix}manifest.json")
            s3.head_object(Bucket=bucket_out, Key=f"{prefix}SHA256SUMS.asc")
            for line in sums.splitlines():
                digest, name = line.split("  ", 1)
                body = s3.get_object(Bucket=bucket_out, Key=prefix + name)["Body"].read()
                if hashlib.sha256(body).hexdigest() != digest:
                    return f"{j}: {name} does not match SHA256SUMS"
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            return f"{j}: {e}"
        return None

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(16) as ex:
        incomplete = [r for r in ex.map(check_set, good) if r]

    # A sample checked by the real verifiers.
    sample = rnd.sample(good, min(args.sample, len(good)))
    verified, failed_verify = 0, []
    vdir = f"{work}/verify"
    for j in sample:
        prefix = "late/" if j == "late-submit" else f"{j}/"
        d = f"{vdir}/{j}"
        os.makedirs(d, exist_ok=True)
        for obj in s3.list_objects_v2(Bucket=bucket_out, Prefix=prefix).get("Contents", []):
            s3.download_file(bucket_out, obj["Key"], f"{d}/{obj['Key'][len(prefix):]}")
        checks = []
        for name in os.listdir(d):
            p = f"{d}/{name}"
            if name.endswith(".rpm"):
                checks.append(("verify_rpm", cert, p))
            elif name.endswith(".deb"):
                checks.append(("verify_deb", cert, p))
            elif name.endswith(".asc"):
                checks.append(("verify_gpg", cert, p, p[:-4]))
        for chk in checks:
            r = subprocess.run(["bash", "-c", f'. "{VERIFY}"; "$@"', "verify", *chk], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                failed_verify.append((j, chk[0], r.stderr[-300:]))
        verified += 1
    audit = subprocess.run([args.signet, "audit", "verify", "--audit", f"s3://signet-audit/{run}/"], env=wenv,
                           capture_output=True, text=True)

    logs = ""
    for n in workers:
        with open(f"{work}/worker-{n}.log", errors="replace") as f:
            logs += f.read()
    retried = logs.count("transient failure; retrying the job")
    in_place = sum(logs.count(m) for m in ("fetch failed", "upload failed", "audit append failed",
                                           "reading the manifest failed"))
    reconnects = logs.count("broker connection lost; reconnecting") + logs.count("cannot reach the broker")
    disk = logs.count("No space left on device")
    panics = logs.count("panicked")
    warm, end = probe.get("warm", (0, 0)), probe["end"]
    rss_growth = end[0] - warm[0]
    fd_growth = end[1] - warm[1]
    leak = end == (0, 0) or rss_growth > max(32 * 1024, warm[0] // 2) or fd_growth > 16
    rows = [
        ("jobs (good + bad)", f"{len(expected)} ({len(good)} good answered, "
                              f"{sum(1 for e in expected.values() if e)} bad)"),
        ("workers / concurrency", f"{args.workers} / {args.concurrency}"),
        ("SIGKILLs (restarts)", f"{faults['kills']}"),
        ("broker restarts", f"{faults['broker restarts']} (late submit across it: exit {probe.get('late_submit')})"),
        ("S3 outages", f"{faults['s3 outages']} ({faults['s3 outage seconds']:.0f}s in all)"),
        ("full work dir", f"{faults['disk full']}" + ("" if have_tmpfs else " (no tmpfs: skipped)")),
        ("faults seen by workers (logs)", f"{in_place} store retries in place, {retried} job retries, "
                                          f"{reconnects} broker reconnects, {disk} ENOSPC, {panics} panics"),
        ("lost (no event)", f"{len(lost)}"),
        ("wrong outcome", f"{len(wrong)}"),
        ("good jobs dead-lettered", f"{len(good_dead)} (dead letters in all: {len(dead)})"),
        ("output sets incomplete or mismatched", f"{len(incomplete)}"),
        ("sample verified (rpmkeys, debsig-verify, gpg)", f"{verified} jobs, {len(failed_verify)} failures"),
        ("audit verify", "ok" if audit.returncode == 0 else f"FAILED: {audit.stderr.strip()[-200:]}"),
        ("time", f"{elapsed:.0f}s ({len(expected) / max(elapsed, 1):.1f} jobs/s)"),
        ("leak probe RSS warm -> end", f"{warm[0] // 1024} -> {end[0] // 1024} MiB"),
        ("leak probe fds warm -> end", f"{warm[1]} -> {end[1]}"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"| {'check'.ljust(w)} | result |\n|{'-' * (w + 2)}|--------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    for name, items in (("lost", lost), ("wrong", wrong), ("dead-lettered good", good_dead),
                        ("incomplete", incomplete), ("verify failures", failed_verify)):
        for it in items[:10]:
            problems.append(f"{name}: {it}")
    if audit.returncode != 0:
        problems.append("audit verify failed")
    if probe.get("late_submit") != 0:
        problems.append(f"signet submit across the broker restart exited {probe.get('late_submit')}")
    if panics:
        problems.append(f"{panics} panics in the worker logs")
    if leak:
        problems.append(f"leak probe: rss +{rss_growth} KiB, fds +{fd_growth}")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    if problems:
        print(f"logs and state kept in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
