#!/usr/bin/env bash
# Benchmark: what one sign job costs end to end through `signet worker`
# (RabbitMQ job queue -> S3 fetch -> sign -> S3 write -> completion event).
#
# Usage:
#   bench/worker.sh [--count N] [--algo ed25519|rsa4096] [--in vault|pkcs11|kms]
#                   [--artifacts K] [--only-throughput]
#
#   --count N   jobs per phase, K 1 KiB-payload RPMs per job (default 100)
#   --algo A    algorithm of the key the worker signs with (default ed25519)
#   --in H      where the key lives: sealed in the vault (default), a SoftHSM2
#               token made for the run, or moto's KMS (RSA only: moto has no
#               Ed25519 KMS keys)
#   --artifacts K  RPMs per job (default 1); a job's artifacts are signed
#               SIGNET_SIGN_THREADS at a time (0, the default: the worker decides)
#   --only-throughput  just the 1-worker throughput phase; prints one line
#               "jobs_per_s=R worker_ms_median=M" on stdout instead of the report
#
# Phases (each in its own namespace, so queues and event streams start empty):
#   latency  ONE worker; jobs submitted one at a time with `signet submit --wait`.
#            Client wall time per job (includes starting the submit process and
#            its AMQP connection) and the worker's own `duration_ms` per job.
#            One unmeasured warm-up job first: the worker unseals the key on
#            its first job and caches it.
#   tput-1   all N jobs queued (broker-confirmed) BEFORE any worker runs, then
#   tput-2   1 resp. 2 workers started (competing on the one queue). Time runs
#            from the first worker's "worker consuming" log line to the moment
#            the N-th succeeded event for our job ids is read from
#            `signet events --follow`; includes each worker's key unseal.
# Every job must succeed, or the bench fails. Worker concurrency is
# SIGNET_CONCURRENCY (default 2, the worker's default).
#
# Needs target/release/signet (`cargo build --release`), jq, and the local stack
# (localstack/start.sh: RabbitMQ on 127.0.0.1:5672, moto S3 on 127.0.0.1:5000).
# Buckets bench-in-ID/bench-out-ID and the bench-ID-* queues are left behind
# (moto is in memory; the queues are small). Markdown on stdout, progress on stderr.
set -euo pipefail

# C locale: decimal points in awk/printf. UTC: log timestamps are UTC.
export LC_ALL=C TZ=UTC
SCRIPT_START=$EPOCHREALTIME
# Other load (e.g. a cargo build) skews every number here: shown in the report.
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIGNET=$ROOT/target/release/signet

die() {
    echo "bench/worker.sh: $*" >&2
    exit 1
}
log() { echo "# $*" >&2; }
usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
    exit 2
}

# ------------------------------------------------------------- options ----

COUNT=100 ALGO=ed25519 HOME_IN=vault ARTIFACTS=1 ONLY_TPUT=
while [[ $# -gt 0 ]]; do
    case $1 in
    --in) [[ $# -ge 2 ]] || usage; HOME_IN=$2; shift 2 ;;
    --artifacts) [[ $# -ge 2 ]] || usage; ARTIFACTS=$2; shift 2 ;;
    --only-throughput) ONLY_TPUT=1; shift ;;
    --count) [[ $# -ge 2 ]] || usage; COUNT=$2; shift 2 ;;
    --count=*) COUNT=${1#*=}; shift ;;
    --algo) [[ $# -ge 2 ]] || usage; ALGO=$2; shift 2 ;;
    --algo=*) ALGO=${1#*=}; shift ;;
    -h | --help) usage ;;
    *) echo "bench/worker.sh: unknown argument: $1" >&2; usage ;;
    esac
done
[[ $COUNT =~ ^[1-9][0-9]*$ ]] || die "--count must be a positive integer"
[[ $ALGO == ed25519 || $ALGO == rsa4096 ]] || die "--algo must be ed25519 or rsa4096"
[[ $HOME_IN == vault || $HOME_IN == pkcs11 || $HOME_IN == kms ]] || die "--in must be vault, pkcs11 or kms"
[[ $ARTIFACTS =~ ^[1-9][0-9]*$ ]] || die "--artifacts must be a positive integer"
[[ -x $SIGNET ]] || die "missing $SIGNET (run: cargo build --release)"
command -v jq >/dev/null || die "missing tool: jq"

export SIGNET_CONCURRENCY=${SIGNET_CONCURRENCY:-2}
# The bench parses INFO lines ("worker consuming", "job finished") as JSON.
export SIGNET_LOG_FORMAT=json RUST_LOG=info

# ------------------------------------------------------- scratch, cleanup ----

TMP=$(mktemp -d "${TMPDIR:-/tmp}/signet-bench-worker.XXXXXX")
WORKER_PIDS=()   # workers of the current phase
WATCH_PIDS=()    # `signet events --follow` and its time-stamping reader

# SIGTERM is the worker's clean shutdown (drain in-flight jobs, then exit 0).
stop_workers() {
    local pid rc=0
    for pid in "${WORKER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${WORKER_PIDS[@]}"; do wait "$pid" || rc=$?; done
    WORKER_PIDS=()
    return $rc
}
stop_watch() {
    local pid
    # Killing `events --follow` closes the FIFO, so the reader sees EOF and ends.
    for pid in "${WATCH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${WATCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    WATCH_PIDS=()
}
cleanup() {
    trap - EXIT INT TERM
    stop_workers || true
    stop_watch
    rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- stats ----

# stats < numbers: "median p90" (p90 by nearest rank), numbers rounded to 1 decimal.
stats() {
    sort -n | awk '{ a[NR] = $1 }
        END {
            if (NR == 0) { print "n/a n/a"; exit }
            med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            r = int((9 * NR + 9) / 10)   # ceil(0.9 * NR) without floating point
            printf "%.1f %.1f\n", med, a[r]
        }'
}
# Microseconds since the epoch from $EPOCHREALTIME (integer arithmetic in bash).
usec() { local t=${1/./}; echo $((10#$t)); }
# Seconds since the epoch (with fraction) from an RFC 3339 UTC timestamp.
epoch_of() { date -u -d "$1" +%s.%N; }

# --------------------------------------------------------------- stack ----

log "local stack"
out="$("$ROOT/localstack/start.sh")" || die "the local stack did not start"
eval "$out"
PY=${SIGNET_STACK_DIR:-/var/tmp/signet-stack}/venv/bin/python
[[ -x $PY ]] || die "missing $PY (localstack/start.sh should have made it)"

# One id per run: namespaces and buckets never collide with other runs.
RUN_ID=$RANDOM$RANDOM
NS=bench-$RUN_ID
IN_BUCKET=bench-in-$RUN_ID
OUT_BUCKET=bench-out-$RUN_ID

# -------------------------------------------------------- key, fixtures ----

log "key ($ALGO, in $HOME_IN)"
export SIGNET_VAULT=dir:$TMP/vault SIGNET_VAULT_PASSPHRASE_FILE=$TMP/passphrase
head -c 32 /dev/urandom | base64 >"$TMP/passphrase"
case $HOME_IN in
pkcs11)
    command -v softhsm2-util >/dev/null || die "missing softhsm2 (scripts/setup-debian.sh installs it)"
    mkdir -p "$TMP/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$TMP/tokens" >"$TMP/softhsm2.conf"
    export SOFTHSM2_CONF=$TMP/softhsm2.conf
    softhsm2-util --init-token --free --label bench --pin 4711 --so-pin 1234 >/dev/null
    echo 4711 >"$TMP/pin"
    export SIGNET_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so SIGNET_PKCS11_TOKEN=bench SIGNET_PKCS11_PIN_FILE=$TMP/pin
    ;;
kms) export SIGNET_KMS_ENDPOINT=${SIGNET_KMS_ENDPOINT:-$SIGNET_S3_ENDPOINT} ;;
esac
"$SIGNET" keys generate bench --algo "$ALGO" --in "$HOME_IN" >"$TMP/keygen.out"
# The worker needs a policy (the broker user in SIGNET_AMQP_URL may use key bench) and an
# audit log.
AMQP_USER=$(sed -E 's#^amqps?://([^:@/]*).*#\1#' <<<"$SIGNET_AMQP_URL")
cat >"$TMP/policy.toml" <<EOF
[keys.bench]
producers = ["${AMQP_USER:-guest}"]
sources = ["$IN_BUCKET/*"]
outputs = ["$OUT_BUCKET/*"]
formats = ["rpm"]
EOF
export SIGNET_POLICY=$TMP/policy.toml SIGNET_AUDIT=s3://signet-audit/bench-$RUN_ID/

N_RPMS=$((COUNT > ARTIFACTS ? COUNT : ARTIFACTS))
log "$N_RPMS fixture RPMs"
"$ROOT/tests/support/fixtures.sh" rpms "$TMP/rpms" "$N_RPMS" 1024 >/dev/null
mapfile -t RPMS < <(cd "$TMP/rpms" && ls -- *.rpm)
[[ ${#RPMS[@]} -eq $N_RPMS ]] || die "expected $N_RPMS RPMs, fixtures.sh made ${#RPMS[@]}"
RPM_BYTES=$(stat -c %s "$TMP/rpms/${RPMS[0]}")

log "buckets $IN_BUCKET, $OUT_BUCKET; upload"
"$PY" - "$TMP/rpms" "$IN_BUCKET" "$OUT_BUCKET" <<'EOF'
import os, sys, boto3
src, in_bucket, out_bucket = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=os.environ["SIGNET_S3_ENDPOINT"])
for b in (in_bucket, out_bucket):
    s3.create_bucket(Bucket=b)
for name in sorted(os.listdir(src)):
    s3.upload_file(os.path.join(src, name), in_bucket, "rpms/" + name)
EOF

# Inputs of job number I (1-based): K distinct RPMs, each phase reuses the set.
input_uri() {
    local j uris=()
    for ((j = 0; j < ARTIFACTS; j++)); do uris+=("s3://$IN_BUCKET/rpms/${RPMS[$((($1 - 1 + j) % N_RPMS))]}"); done
    echo "${uris[*]}"
}
job_id() { printf '%s-%05d' "$1" "$2"; }

# ------------------------------------------------------------- workers ----

# start_worker NAME NAMESPACE: one `signet worker`, JSON log in $TMP/NAME.log,
# its own staging dir (removed with $TMP).
start_worker() {
    mkdir -p "$TMP/work-$1"
    SIGNET_NAMESPACE=$2 SIGNET_WORK_DIR=$TMP/work-$1 "$SIGNET" worker 2>"$TMP/$1.log" &
    WORKER_PIDS+=($!)
}
# consuming_at NAME: epoch seconds of the worker's "worker consuming" line,
# waiting for it (30 s at most); fails if the worker died first.
consuming_at() {
    local name=$1 pid=$2 i ts
    for ((i = 0; i < 3000; i++)); do
        ts=$(jq -r 'select(.message == "worker consuming") | .timestamp' "$TMP/$name.log" 2>/dev/null | head -1)
        if [[ -n $ts ]]; then epoch_of "$ts"; return; fi
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "worker $name exited before consuming"; }
        sleep 0.01
    done
    die "worker $name not consuming after 30 s"
}
# durations NAME... [EXCLUDE_JOB_ID]: duration_ms of succeeded jobs in these logs.
durations() {
    local skip=$1
    shift
    for name in "$@"; do
        jq -r --arg skip "$skip" 'select(.message == "job finished" and .outcome == "succeeded"
            and .span["job.id"] != $skip) | .duration_ms' "$TMP/$name.log"
    done
}

# -------------------------------------------------------- 1. latency ----

if [[ -n $ONLY_TPUT ]]; then
    throughput_only=1
fi
if [[ -z ${throughput_only:-} ]]; then

LAT_NS=$NS-lat
log "latency: 1 worker, $COUNT sequential submit --wait (namespace $LAT_NS)"
start_worker lat "$LAT_NS"
consuming_at lat "${WORKER_PIDS[0]}" >/dev/null
# shellcheck disable=SC2086  # $3: the job's URIs, split on purpose
submit_wait() { # ID PREFIX URIS
    SIGNET_NAMESPACE=$LAT_NS "$SIGNET" submit --key bench --output-bucket "$OUT_BUCKET" \
        --output-prefix "$2" --job-id "$1" --timeout 60 --wait $3 >>"$TMP/lat.events" 2>>"$TMP/submit.err" ||
        die "job $1 did not succeed (exit $?): $(tail -n 3 "$TMP/submit.err")"
}
WARMUP=lat-warmup
submit_wait "$WARMUP" "lat/warmup/" "$(input_uri 1)"
: >"$TMP/lat.ms"
for ((i = 1; i <= COUNT; i++)); do
    id=$(job_id lat "$i")
    t0=$EPOCHREALTIME
    submit_wait "$id" "lat/$i/" "$(input_uri "$i")"
    t1=$EPOCHREALTIME
    echo "$(($(usec "$t1") - $(usec "$t0")))" | awk '{ printf "%.3f\n", $1 / 1000 }' >>"$TMP/lat.ms"
done
stop_workers || die "latency worker did not stop cleanly"
read -r LAT_MED LAT_P90 < <(stats <"$TMP/lat.ms")
read -r LATW_MED LATW_P90 < <(durations "$WARMUP" lat | stats)
[[ $(durations "$WARMUP" lat | wc -l) -eq $COUNT ]] || die "latency worker logged fewer than $COUNT succeeded jobs"
fi

# ----------------------------------------------------- 2. throughput ----

# throughput K: queue all N jobs, start K workers, wait for N succeeded events.
# Sets TP_SECS, TP_RATE, TPW_MED, TPW_P90, TP_SPLIT, TP_STARTUP.
throughput() {
    local k=$1 ns=$NS-tput$1 i names=() pid t_launch t_cons t c last
    log "throughput: queue $COUNT jobs, then $k worker(s) (namespace $ns)"

    # Queue everything first, 4 submits at a time (xargs fails if any does);
    # each submit returns only once the broker confirmed the job.
    for ((i = 1; i <= COUNT; i++)); do
        printf -- '--job-id %s --output-prefix %s/ %s\n' "$(job_id "tput$k" "$i")" "tput$k/$i" "$(input_uri "$i")"
    done | SIGNET_NAMESPACE=$ns xargs -P 4 -L 1 "$SIGNET" submit --key bench --output-bucket "$OUT_BUCKET" \
        2>>"$TMP/submit.err" || die "queueing jobs failed: $(tail -n 3 "$TMP/submit.err")"

    # Watch completion events; each line is stamped with the time it was read
    # (bash's $EPOCHREALTIME: no process per line), so the end time does not
    # depend on how often we poll the file below.
    mkfifo "$TMP/events-$k.fifo"
    SIGNET_NAMESPACE=$ns "$SIGNET" events --follow >"$TMP/events-$k.fifo" 2>>"$TMP/events.err" &
    WATCH_PIDS+=($!)
    while IFS= read -r line; do printf '%s\t%s\n' "$EPOCHREALTIME" "$line"; done \
        <"$TMP/events-$k.fifo" >"$TMP/events-$k.log" &
    WATCH_PIDS+=($!)

    t_launch=$EPOCHREALTIME
    for ((i = 1; i <= k; i++)); do
        names+=("tput$k-w$i")
        start_worker "tput$k-w$i" "$ns"
    done
    # Start of timing: the first worker that began consuming.
    t_cons=
    for ((i = 0; i < k; i++)); do
        t=$(consuming_at "${names[$i]}" "${WORKER_PIDS[$i]}")
        if [[ -z $t_cons ]] || awk -v a="$t" -v b="$t_cons" 'BEGIN { exit !(a < b) }'; then t_cons=$t; fi
    done

    # Poll cheaply (one grep, 5x/s) so the poller barely competes for CPU with
    # the workers; stop at the first failed event or after a generous timeout.
    local limit=$((60 + COUNT * 2)) deadline
    deadline=$((SECONDS + limit))
    while :; do
        c=$(grep -c '"type":"signet.job.succeeded"' "$TMP/events-$k.log" || true)
        [[ $c -ge $COUNT ]] && break
        if grep -q '"type":"signet.job.failed"' "$TMP/events-$k.log"; then
            grep '"type":"signet.job.failed"' "$TMP/events-$k.log" | head -3 >&2
            die "throughput ($k workers): a job failed"
        fi
        [[ $SECONDS -lt $deadline ]] || die "throughput ($k workers): only $c of $COUNT succeeded events after $limit s"
        for pid in "${WORKER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "a worker died (logs in $TMP)"; done
        sleep 0.2
    done
    stop_workers || die "throughput ($k workers): a worker did not stop cleanly"
    stop_watch

    # Exactly our N job ids, each succeeded; the end is when the last new one arrived.
    for ((i = 1; i <= COUNT; i++)); do job_id "tput$k" "$i"; echo; done >"$TMP/ids-$k"
    last=$(jq -R -r --rawfile ids "$TMP/ids-$k" '
            ($ids | split("\n") | map(select(. != "") | {(.): true}) | add) as $want
            | index("\t") as $tab | select($tab != null) | .[:$tab] as $t | (.[$tab + 1:] | fromjson)
            | select(.type == "signet.job.succeeded" and $want[.subject]) | "\($t) \(.subject)"' "$TMP/events-$k.log" |
        awk -v n="$COUNT" '!seen[$2]++ { if (++u == n) { print $1; exit } }')
    [[ -n $last ]] || die "throughput ($k workers): fewer than $COUNT distinct succeeded events for our job ids"

    TP_SECS=$(awk -v a="$t_cons" -v b="$last" 'BEGIN { printf "%.3f", b - a }')
    TP_RATE=$(awk -v s="$TP_SECS" -v n="$COUNT" 'BEGIN { printf "%.1f", n / s }')
    TP_STARTUP=$(awk -v a="$t_launch" -v b="$t_cons" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    read -r TPW_MED TPW_P90 < <(durations "" "${names[@]}" | stats)
    TP_SPLIT=$(for n in "${names[@]}"; do durations "" "$n" | wc -l; done | paste -sd /)
}

throughput 1
T1_SECS=$TP_SECS T1_RATE=$TP_RATE T1_MED=$TPW_MED T1_P90=$TPW_P90 T1_SPLIT=$TP_SPLIT T1_START=$TP_STARTUP
if [[ -n ${throughput_only:-} ]]; then
    grep -h '"level":"WARN"\|"level":"ERROR"' "$TMP"/tput*.log | head -3 >&2 || true
    echo "jobs_per_s=$T1_RATE worker_ms_median=$T1_MED"
    exit 0
fi
throughput 2
T2_SECS=$TP_SECS T2_RATE=$TP_RATE T2_MED=$TPW_MED T2_P90=$TPW_P90 T2_SPLIT=$TP_SPLIT T2_START=$TP_STARTUP

# ----------------------------------------------------------- anomalies ----

# Anything but a clean first-attempt success in any worker log: WARN/ERROR lines
# (transient failures, requeues, publish retries), redeliveries, retries.
cat "$TMP"/lat.log "$TMP"/tput*.log >"$TMP/all-workers.log"
WARNS=$(jq -r 'select(.level == "WARN" or .level == "ERROR") | "\(.level) \(.message) \(.error // "")"' "$TMP/all-workers.log")
N_WARN=$(grep -c . <<<"$WARNS" || true)
N_RETRY=$(jq -r 'select(.message == "job finished" and (.outcome != "succeeded" or .span.attempt > 1)) | 1' "$TMP/all-workers.log" | wc -l)
N_REDELIV=$(jq -r 'select(.message == "job started" and .redelivered == true) | 1' "$TMP/all-workers.log" | wc -l)
[[ $N_WARN -eq 0 ]] || { log "WARN/ERROR lines in worker logs (first 5):"; head -5 <<<"$WARNS" >&2; }

# ------------------------------------------------------------- report ----

CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
# shellcheck source=/dev/null
OS=$(. /etc/os-release && echo "$PRETTY_NAME")
GIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || GIT="$GIT+dirty"
# The broker's own version, from the server properties of connection.start.
RMQ=$("$PY" - <<'EOF' 2>/dev/null || echo "?"
import re, socket
s = socket.create_connection(("127.0.0.1", 5672), timeout=3)
s.sendall(b"AMQP\x00\x00\x09\x01")
buf = b""
while len(buf) < 4096:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
    m = re.search(rb"\x07versionS\x00\x00\x00(.)", buf, re.S)
    if m and len(buf) >= m.end() + m.group(1)[0]:
        print(buf[m.end():m.end() + m.group(1)[0]].decode())
        break
EOF
)
MOTO=$("$PY" -c 'import moto; print(moto.__version__)' 2>/dev/null || echo "?")
TOTAL=$(awk -v a="$SCRIPT_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

cat <<EOF
### signet worker: $COUNT jobs of $ARTIFACTS small RPM(s) ($RPM_BYTES bytes) each, key $ALGO in $HOME_IN, concurrency $SIGNET_CONCURRENCY per worker

| phase | workers | client ms/job median / p90 | worker duration_ms median / p90 | wall s | jobs/s | jobs per worker |
|---|---|---|---|---|---|---|
| latency (submit --wait, one at a time) | 1 | $LAT_MED / $LAT_P90 | $LATW_MED / $LATW_P90 | - | - | $COUNT |
| throughput (queued first) | 1 | - | $T1_MED / $T1_P90 | $T1_SECS | $T1_RATE | $T1_SPLIT |
| throughput (queued first) | 2 | - | $T2_MED / $T2_P90 | $T2_SECS | $T2_RATE | $T2_SPLIT |

- client ms: wall time of \`signet submit --wait\` (process start, AMQP connect, publish, confirm, event); warm-up job excluded.
- wall s: first "worker consuming" to the ${COUNT}th succeeded event read; worker launch to consuming took $T1_START / $T2_START ms (not counted).
- worker logs: $N_WARN WARN/ERROR lines, $N_RETRY non-first-attempt or unsuccessful jobs, $N_REDELIV redeliveries.
- machine: $(nproc) CPUs, $CPU, $MEM, $OS, kernel $(uname -r); 1-min load avg $LOAD_START at start, $(cut -d' ' -f1 /proc/loadavg) at end
- versions: $("$SIGNET" --version) ($GIT, binary built $(date -u -r "$SIGNET" +%FT%TZ)), RabbitMQ $RMQ, moto $MOTO, $(rpm --version 2>/dev/null || echo "rpm ?"); total bench time ${TOTAL} s
EOF
