"""Scaling benchmark: N jobs through 1, 2 and 4 competing workers, per S3 server.

Run through bench/scale.sh, which starts the servers. For each S3 server and worker count,
in one namespace each: N one-RPM jobs are queued (broker-confirmed) before any worker
starts, then the workers start; time runs from the first worker's "worker consuming" to
the N-th completion event. Reported per row:
- jobs/s;
- worker CPU seconds per job (utime + stime of every worker from /proc, just before SIGTERM);
- S3 requests per job and audit-log PUTs per job, from the workers' own /metrics
  (`signet_s3_requests_total`, `signet_audit_requests_total`), scraped before SIGTERM, so
  the one index PUT each worker makes when it closes its chain on exit is not in them
  (that is `workers` PUTs per run, listed apart);
- audit requests that failed a precondition (412);
- p50/p99 of the worker's own per-job duration (delivery to settlement, `duration_ms`).
With moto, the S3 server's own request log gives the audit PUTs too (closes included), as a
check on the workers' counts. Every job must succeed, or the bench fails.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import boto3
import pika
from botocore.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        out[series] = float(value)
    return out


def total(metrics, name, **labels):
    s = 0.0
    for series, v in metrics.items():
        if series == name or series.startswith(name + "{"):
            if all(f'{k}="{val}"' in series for k, val in labels.items()):
                s += v
    return s


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))]


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_one(args, server, endpoint, workers, work, env, fixture):
    run = f"scale-{int(time.time())}-{os.getpid()}-{server}-{workers}"
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
    bin_, bout = f"{run}-in", f"{run}-out"
    for b in (bin_, bout):
        s3.create_bucket(Bucket=b)
    try:
        s3.create_bucket(Bucket="signet-audit")
    except Exception:
        pass
    s3.upload_file(fixture, bin_, "fx/hello-1.0-1.noarch.rpm")
    policy = f"{work}/policy-{run}.toml"
    with open(policy, "w") as f:
        f.write(f'[keys.bench]\nproducers = ["guest"]\nsources = ["{bin_}/*"]\noutputs = ["{bout}/*"]\n'
                f'formats = ["rpm"]\n')
    wenv = dict(env, SIGNET_NAMESPACE=run, SIGNET_S3_ENDPOINT=endpoint, SIGNET_POLICY=policy,
                SIGNET_AUDIT=f"s3://signet-audit/{run}/", SIGNET_CONCURRENCY=str(args.concurrency),
                SIGNET_LOG_FORMAT="json", RUST_LOG="info")

    params = pika.URLParameters(env["SIGNET_AMQP_URL"])
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    subprocess.run([args.signet, "events"], env=wenv, check=True, stdout=subprocess.DEVNULL, timeout=60)
    observer = f"{run}.observer"
    ch.queue_declare(observer, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(observer, f"{run}.events", "#")
    ch.confirm_delivery()
    for i in range(args.jobs):
        jid = f"j{i:05d}"
        job = {"job_id": jid, "key": "bench", "artifacts": [{"bucket": bin_, "key": "fx/hello-1.0-1.noarch.rpm"}],
               "output": {"bucket": bout, "prefix": f"{jid}/"}}
        ch.basic_publish("", f"{run}.jobs", json.dumps(job).encode(), pika.BasicProperties(
            delivery_mode=2, message_id=jid, user_id="guest", content_type="application/json"))
    conn.close()

    events = {}
    lock = threading.Lock()
    stop = threading.Event()

    def observe():
        c = pika.BlockingConnection(params)
        cch = c.channel()
        for method, _, body in cch.consume(observer, inactivity_timeout=0.2):
            if stop.is_set():
                break
            if method is None:
                continue
            ev = json.loads(body)
            with lock:
                events.setdefault(ev["data"]["job_id"], ev)
            cch.basic_ack(method.delivery_tag)
        c.close()

    threading.Thread(target=observe, daemon=True).start()
    procs, ports, logs = [], [], []
    for n in range(workers):
        port = free_port()
        d = f"{work}/{run}-work-{n}"
        os.makedirs(d)
        logf = f"{work}/{run}-worker-{n}.log"
        logs.append(logf)
        ports.append(port)
        with open(logf, "wb") as lf:
            procs.append(subprocess.Popen([args.signet, "worker"], stdout=subprocess.DEVNULL, stderr=lf,
                                          env=dict(wenv, SIGNET_WORK_DIR=d, SIGNET_METRICS_ADDR=f"127.0.0.1:{port}")))
    # Time from the first worker consuming to the last event.
    t0 = None
    deadline = time.time() + 60
    while t0 is None:
        for lf in logs:
            with open(lf) as f:
                if "worker consuming" in f.read():
                    t0 = time.time()
                    break
        if time.time() > deadline:
            sys.exit(f"no worker started consuming: see {logs[0]}")
        time.sleep(0.005)
    deadline = time.time() + 60 + args.jobs
    while True:
        with lock:
            n = len(events)
        if n >= args.jobs:
            break
        if time.time() > deadline:
            sys.exit(f"only {n} of {args.jobs} events after the deadline")
        time.sleep(0.01)
    elapsed = time.time() - t0
    stop.set()
    failed = [e for e in events.values() if e["type"] != "signet.job.succeeded"]
    if failed:
        sys.exit(f"{len(failed)} jobs failed, e.g. {json.dumps(failed[0])[:400]}")
    cpu = sum(cpu_seconds(p.pid) for p in procs)
    metrics = [scrape(p) for p in ports]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        if p.wait(timeout=60) != 0:
            sys.exit(f"a worker exited {p.returncode}")
    durations = []
    for lf in logs:
        with open(lf) as f:
            for line in f:
                if '"job finished"' in line:
                    m = re.search(r'"duration_ms":(\d+)', line)
                    if m:
                        durations.append(int(m.group(1)))
    s3_requests = sum(total(m, "signet_s3_requests_total") for m in metrics)
    audit_puts = sum(total(m, "signet_audit_requests_total", operation="put") for m in metrics)
    audit_412 = sum(total(m, "signet_audit_requests_total", result="exists") for m in metrics)
    row = {
        "server": server, "workers": workers, "jobs": args.jobs, "seconds": elapsed,
        "jobs_per_s": args.jobs / elapsed, "cpu_s_per_job": cpu / args.jobs,
        "s3_requests_per_job": s3_requests / args.jobs, "audit_puts_per_job": audit_puts / args.jobs,
        "audit_412": int(audit_412), "p50_ms": pct(durations, 50), "p99_ms": pct(durations, 99),
        "jobs_per_worker": [int(total(m, "signet_jobs_total")) for m in metrics],
    }
    if server == "moto" and args.moto_log:
        with open(args.moto_log) as f:
            # moto colours the request line of an error answer: match the path anywhere.
            needle = f'PUT /signet-audit/{run}/'
            lines = [ln for ln in f if needle in ln]
        row["moto_log_audit_puts"] = len(lines)
        row["moto_log_412"] = sum(1 for ln in lines if ' 412 ' in ln)
    log(json.dumps(row))
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--servers", default="moto,s3s")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--moto-endpoint", default=os.environ.get("SIGNET_S3_ENDPOINT"))
    ap.add_argument("--moto-log")
    ap.add_argument("--s3s-endpoint")
    ap.add_argument("--signet", default=os.path.join(REPO, "target/release/signet"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="signet-scale-")
    env = dict(os.environ, SIGNET_VAULT=f"dir:{work}/vault", SIGNET_VAULT_PASSPHRASE_FILE=f"{work}/passphrase")
    with open(f"{work}/passphrase", "w") as f:
        f.write("bench passphrase\n")
    subprocess.run([args.signet, "keys", "generate", "bench", "--algo", "ed25519"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fx = f"{work}/fx"
    subprocess.run(["bash", os.path.join(REPO, "tests/support/fixtures.sh"), "all", fx], check=True,
                   stdout=subprocess.DEVNULL)
    fixture = f"{fx}/rpm/hello-1.0-1.noarch.rpm"
    endpoints = {"moto": args.moto_endpoint, "s3s": args.s3s_endpoint}
    rows = []
    for server in args.servers.split(","):
        for w in [int(x) for x in args.workers.split(",")]:
            log(f"{server}: {w} worker(s), {args.jobs} jobs")
            rows.append(run_one(args, server, endpoints[server], w, work, env, fixture))
    print(f"{args.jobs} one-RPM jobs (Ed25519), SIGNET_CONCURRENCY={args.concurrency}, "
          f"load average at start {open('/proc/loadavg').read().split()[0]}, {os.cpu_count()} cores\n")
    print("| S3 server | workers | jobs/s | vs 1 worker | worker CPU s/job | S3 requests/job | audit PUTs/job "
          "| audit 412s | p50 ms | p99 ms | jobs per worker |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base = {}
    for r in rows:
        base.setdefault(r["server"], r["jobs_per_s"])
        print(f"| {r['server']} | {r['workers']} | {r['jobs_per_s']:.1f} | {r['jobs_per_s'] / base[r['server']]:.2f}x "
              f"| {r['cpu_s_per_job']:.4f} | {r['s3_requests_per_job']:.2f} | {r['audit_puts_per_job']:.3f} "
              f"| {r['audit_412']} | {r['p50_ms']} | {r['p99_ms']} | {'/'.join(map(str, r['jobs_per_worker']))} |")
    moto = [r for r in rows if "moto_log_audit_puts" in r]
    if moto:
        print("\nmoto's own request log, audit PUTs per job (the workers' chain closes included): "
              + ", ".join(f"{r['workers']} workers {r['moto_log_audit_puts'] / r['jobs']:.3f} "
                          f"({r['moto_log_412']} x 412)" for r in moto))


if __name__ == "__main__":
    main()
