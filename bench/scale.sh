#!/usr/bin/env bash
# Scaling benchmark: 1, 2 and 4 competing workers against moto and against s3s-fs, a fast
# S3 server in Rust (moto is a Python process and dominates end-to-end figures on 2 cores).
#
# Usage:
#   bench/scale.sh [--jobs N] [--workers 1,2,4] [--servers moto,s3s] [--concurrency C]
#
# Reports, per server and worker count: jobs/s, worker CPU s/job, S3 requests/job and audit
# PUTs/job (the workers' /metrics), audit 412s, p50/p99 per-job duration (bench/scale.py
# says how each is measured). Markdown on stdout, progress on stderr.
#
# Installs s3s-fs 0.14.1 (`cargo install`, the first time: a few minutes) under
# $SIGNET_STACK_DIR/s3s-fs and runs it on 127.0.0.1:$SIGNET_S3S_PORT (5010) over a fresh
# directory; RabbitMQ and moto come from localstack/start.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${SIGNET_BENCH_NO_BUILD:-} ]] || cargo build --release --locked --bin signet >&2
eval "$(bash localstack/start.sh)"
py="$SIGNET_STACK_DIR/venv/bin/python"
"$py" -c 'import pika' 2>/dev/null || "$py" -m pip install -q --disable-pip-version-check 'pika>=1.3' >&2

S3S_VERSION=0.14.1
S3S_PORT=${SIGNET_S3S_PORT:-5010}
s3s="$SIGNET_STACK_DIR/s3s-fs/bin/s3s-fs"
if [[ ! -x $s3s ]] || [[ $("$s3s" --version 2>/dev/null) != *"$S3S_VERSION"* ]]; then
    echo "# installing s3s-fs $S3S_VERSION (cargo install; a few minutes the first time)" >&2
    cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked \
        --root "$SIGNET_STACK_DIR/s3s-fs" >&2
fi
data=$(mktemp -d "${TMPDIR:-/tmp}/signet-s3s-XXXXXX")
"$s3s" --host 127.0.0.1 --port "$S3S_PORT" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$data" >"$data.log" 2>&1 &
s3s_pid=$!
trap 'kill $s3s_pid 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$S3S_PORT") 2>/dev/null && break
    sleep 0.1
done
moto_port=${SIGNET_S3_ENDPOINT##*:}
moto_port=${moto_port%/}
"$py" bench/scale.py --s3s-endpoint "http://127.0.0.1:$S3S_PORT" \
    --moto-log "$SIGNET_STACK_DIR/s3-$moto_port.log" "$@"
