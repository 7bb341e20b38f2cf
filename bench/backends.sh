#!/usr/bin/env bash
# Benchmark: the cost of one signature per key backend, side by side in one run:
# a vault key (unsealed into the process) against keys in a SoftHSM2 token, for
# Ed25519 and RSA-4096.
#
# Usage: bench/backends.sh [--small N] [--large M] [--runs R]
#
# Each backend signs N and then M detached files (64 bytes each) in one
# `signet sign` invocation; the per-signature (marginal) cost is
# (t(M) - t(N)) / (M - N), which leaves out the fixed cost of a run (process
# start, vault unsealing with Argon2id, token login). Medians of R runs.
# Needs target/release/signet and softhsm2 (scripts/setup-debian.sh installs it).
# Prints a Markdown table on stdout; progress on stderr.
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIGNET=$ROOT/target/release/signet
SMALL=20 LARGE=200 RUNS=3
while (($#)); do
    case $1 in
    --small) SMALL=$2; shift 2 ;;
    --large) LARGE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: bench/backends.sh [--small N] [--large M] [--runs R]" >&2; exit 2 ;;
    esac
done
[[ -x $SIGNET ]] || { echo "bench/backends.sh: build first (cargo build --release)" >&2; exit 1; }
command -v softhsm2-util >/dev/null || { echo "bench/backends.sh: needs softhsm2" >&2; exit 1; }

W=$(mktemp -d)
trap 'rm -rf -- "$W"' EXIT
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

# run KEY N: wall seconds of one `signet sign` of N files.
run() {
    local key=$1 n=$2 out t0 t1
    out=$W/out-$key-$n
    rm -rf -- "$out"
    local files=()
    for i in $(seq 1 "$n"); do files+=("$W/in/f$i.bin"); done
    t0=$(date +%s.%N)
    "$SIGNET" sign --key "$key" --format detached --out "$out" "${files[@]}" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| key | fixed cost per run (s) | per signature (ms) | ratio to vault key |"
echo "|---|---:|---:|---:|"
declare -A per
for key in vault-ed25519 hsm-ed25519 vault-rsa4096 hsm-rsa4096; do
    ts=() tl=()
    for _ in $(seq 1 "$RUNS"); do
        ts+=("$(run "$key" "$SMALL")")
        tl+=("$(run "$key" "$LARGE")")
        echo "bench/backends.sh: $key done a run" >&2
    done
    s=$(printf '%s\n' "${ts[@]}" | median)
    l=$(printf '%s\n' "${tl[@]}" | median)
    m=$(echo "($l - $s) / ($LARGE - $SMALL) * 1000" | bc -l)
    fixed=$(echo "$s - $m * $SMALL / 1000" | bc -l)
    per[$key]=$m
    base=${key/hsm-/vault-}
    ratio=$(echo "$m / ${per[$base]}" | bc -l)
    printf '| %s | %.3f | %.2f | %.2fx |\n' "$key" "$fixed" "$m" "$ratio"
done
echo
echo "Each signature also verifies itself and writes two files; SHA256SUMS and the manifest are signed once per run."
