#!/usr/bin/env bash
# Benchmark: the cost of one signature per key backend, side by side in one run:
# a vault key (unsealed into the process) against keys in a SoftHSM2 token and
# in moto's KMS, for Ed25519 and RSA-4096 (moto has no Ed25519 KMS keys); then
# jobs/s through one worker for each backend.
#
# Usage: bench/backends.sh [--small N] [--large M] [--runs R] [--jobs J] [--artifacts K]
#                          [--link-ms D]
#
# Here SoftHSM2 and moto run on the same 2 cores as signet, so a "round trip" to them is
# local CPU. A real HSM or KMS is across a network: the `kms+link` rows reach moto's KMS
# through bench/delay-proxy.py, which adds D ms (default 20) to every call, as a KMS in
# another zone or region would.
#
# 1. Each backend signs N and then M detached files (64 bytes each) in one
#    `signet sign` invocation, once on one thread (--threads 1: the latency of
#    one signature) and once with the default threads (one per core for vault
#    keys, 8 for token and KMS keys); the per-signature (marginal) cost is
#    (t(M) - t(N)) / (M - N), which leaves out the fixed cost of a run (process
#    start, vault unsealing with Argon2id, token login, KMS DescribeKey and
#    GetPublicKey). Medians of R runs.
# 2. bench/worker.sh --only-throughput for each backend (RSA-4096): J jobs of K
#    RPMs queued, then one worker; jobs/s with the default signing threads and
#    with SIGNET_SIGN_THREADS=1.
# Needs target/release/signet, softhsm2 (scripts/setup-debian.sh installs it)
# and the local stack (localstack/start.sh: RabbitMQ, moto with its KMS patch).
# Prints Markdown tables on stdout; progress on stderr.
set -euo pipefail
# A failed `signet sign` inside $(...) must fail the bench, not print a time.
shopt -s inherit_errexit
export LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIGNET=$ROOT/target/release/signet
SMALL=20 LARGE=200 RUNS=3 JOBS=20 ARTIFACTS=8 LINK_MS=20
while (($#)); do
    case $1 in
    --link-ms) LINK_MS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --artifacts) ARTIFACTS=$2; shift 2 ;;
    --small) SMALL=$2; shift 2 ;;
    --large) LARGE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: bench/backends.sh [--small N] [--large M] [--runs R] [--jobs J] [--artifacts K]" >&2; exit 2 ;;
    esac
done
[[ -x $SIGNET ]] || { echo "bench/backends.sh: build first (cargo build --release)" >&2; exit 1; }
command -v softhsm2-util >/dev/null || { echo "bench/backends.sh: needs softhsm2" >&2; exit 1; }

out="$("$ROOT/localstack/start.sh")" || { echo "bench/backends.sh: the local stack did not start" >&2; exit 1; }
eval "$out"
export SIGNET_KMS_ENDPOINT=${SIGNET_KMS_ENDPOINT:-$SIGNET_S3_ENDPOINT}
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
W=$(mktemp -d)
PROXY_PID=
trap '[[ -z $PROXY_PID ]] || kill "$PROXY_PID" 2>/dev/null; rm -rf -- "$W"' EXIT
# moto's KMS behind a link of LINK_MS per call.
LINK_PORT=$((20000 + RANDOM % 20000))
python3 "$ROOT/bench/delay-proxy.py" "$LINK_PORT" "${SIGNET_KMS_ENDPOINT#http://}" "$LINK_MS" >"$W/proxy.out" &
PROXY_PID=$!
for _ in $(seq 50); do grep -q listening "$W/proxy.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$W/proxy.out" || { echo "bench/backends.sh: the delay proxy did not start" >&2; exit 1; }
LINK_URL=http://127.0.0.1:$LINK_PORT
mkdir -p "$W/tokens" "$W/in"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$W/tokens" >"$W/softhsm2.conf"
export SOFTHSM2_CONF=$W/softhsm2.conf
softhsm2-util --init-token --free --label bench --pin 4711 --so-pin 1234 >/dev/null
echo 4711 >"$W/pin"
echo "bench passphrase" >"$W/pass"
export SIGNET_VAULT=dir:$W/vault SIGNET_VAULT_PASSPHRASE_FILE=$W/pass
export SIGNET_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so SIGNET_PKCS11_TOKEN=bench SIGNET_PKCS11_PIN_FILE=$W/pin
for i in $(seq 1 "$LARGE"); do head -c 64 /dev/urandom >"$W/in/f$i.bin"; done

"$SIGNET" keys generate vault-ed25519 --algo ed25519 >/dev/null
"$SIGNET" keys generate vault-rsa4096 --algo rsa4096 >/dev/null
"$SIGNET" keys generate hsm-ed25519 --in pkcs11 --algo ed25519 >/dev/null
"$SIGNET" keys generate hsm-rsa4096 --in pkcs11 --algo rsa4096 >/dev/null
"$SIGNET" keys generate kms-rsa4096 --in kms --algo rsa4096 >/dev/null
SIGNET_KMS_ENDPOINT=$LINK_URL "$SIGNET" keys generate kmslink-rsa4096 --in kms --algo rsa4096 >/dev/null

# run KEY N THREADS: wall seconds of one `signet sign` of N files.
run() {
    local key=$1 n=$2 threads=$3 out t0 t1
    out=$W/out-$key-$n
    rm -rf -- "$out"
    local files=()
    for i in $(seq 1 "$n"); do files+=("$W/in/f$i.bin"); done
    t0=$(date +%s.%N)
    local endpoint=$SIGNET_KMS_ENDPOINT
    [[ $key != kmslink-* ]] || endpoint=$LINK_URL
    SIGNET_KMS_ENDPOINT=$endpoint "$SIGNET" sign --key "$key" --format detached --threads "$threads" \
        --out "$out" "${files[@]}" >/dev/null || { echo "bench/backends.sh: signing with $key failed" >&2; return 1; }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# marginal KEY THREADS: "fixed_s per_sig_ms" from the medians of RUNS runs of N and M files.
marginal() {
    local key=$1 threads=$2 ts=() tl=() s l m
    for _ in $(seq 1 "$RUNS"); do
        ts+=("$(run "$key" "$SMALL" "$threads")") || return 1
        tl+=("$(run "$key" "$LARGE" "$threads")") || return 1
    done
    s=$(printf '%s\n' "${ts[@]}" | median)
    l=$(printf '%s\n' "${tl[@]}" | median)
    m=$(echo "($l - $s) / ($LARGE - $SMALL) * 1000" | bc -l)
    echo "$(echo "$s - $m * $SMALL / 1000" | bc -l) $m"
}

echo "### Per signature, \`signet sign\` of $SMALL and $LARGE detached files (medians of $RUNS runs)"
echo
echo "| key | fixed cost per run (s) | latency, 1 thread (ms) | per signature, default threads (ms) | ratio to vault key (default threads) |"
echo "|---|---:|---:|---:|---:|"
declare -A per
for key in vault-ed25519 hsm-ed25519 vault-rsa4096 hsm-rsa4096 kms-rsa4096 kmslink-rsa4096; do
    r1=$(marginal "$key" 1) || exit 1
    rp=$(marginal "$key" 0) || exit 1
    read -r fixed one <<<"$r1"
    read -r _ par <<<"$rp"
    echo "bench/backends.sh: $key done" >&2
    per[$key]=$par
    base=vault-${key#*-}
    ratio=$(echo "$par / ${per[$base]}" | bc -l)
    printf '| %s | %.3f | %.2f | %.2f | %.2fx |\n' "$key" "$fixed" "$one" "$par" "$ratio"
done
echo
echo "Each signature also verifies itself and writes two files; SHA256SUMS and the manifest are signed once per run."
echo

echo "### Through one worker: $JOBS jobs of $ARTIFACTS RPMs each, RSA-4096 (bench/worker.sh --only-throughput)"
echo
echo "| key in | jobs/s, default signing threads | jobs/s, SIGNET_SIGN_THREADS=1 | worker ms/job median (default / 1) |"
echo "|---|---:|---:|---:|"
for row in vault pkcs11 kms kms+link; do
    home=${row%+link} endpoint=$SIGNET_KMS_ENDPOINT
    [[ $row != *+link ]] || endpoint=$LINK_URL
    r_par=$(SIGNET_KMS_ENDPOINT=$endpoint "$ROOT/bench/worker.sh" --in "$home" --algo rsa4096 --artifacts "$ARTIFACTS" \
        --count "$JOBS" --only-throughput 2>>"$W/worker.err") || { tail -5 "$W/worker.err" >&2; exit 1; }
    r_one=$(SIGNET_KMS_ENDPOINT=$endpoint SIGNET_SIGN_THREADS=1 "$ROOT/bench/worker.sh" --in "$home" --algo rsa4096 \
        --artifacts "$ARTIFACTS" --count "$JOBS" --only-throughput 2>>"$W/worker.err") || { tail -5 "$W/worker.err" >&2; exit 1; }
    echo "bench/backends.sh: worker with a $row key done" >&2
    get() { sed -E "s/.*$1=([0-9.]+).*/\1/" <<<"$2"; }
    printf '| %s | %s | %s | %s / %s |\n' "$row" "$(get jobs_per_s "$r_par")" "$(get jobs_per_s "$r_one")" \
        "$(get worker_ms_median "$r_par")" "$(get worker_ms_median "$r_one")"
done
echo
CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MOTO=$("${SIGNET_STACK_DIR:-/var/tmp/signet-stack}/venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null || echo "?")
echo "- machine: $(nproc) CPUs, $CPU; 1-min load avg $LOAD_START at start, $(cut -d' ' -f1 /proc/loadavg) at end"
echo "- kmslink, kms+link: moto's KMS through bench/delay-proxy.py, $LINK_MS ms added to every KMS call"
echo "- servers: SoftHSM2 $(softhsm2-util --version 2>/dev/null || echo "?") (in-process, file store), moto $MOTO KMS on loopback (patched for DIGEST), RabbitMQ and moto S3 from localstack/start.sh"
echo "- $("$SIGNET" --version), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")"
