#!/usr/bin/env bash
# Start (or reuse) signet's local stack: RabbitMQ + S3 (moto) + buckets.
#
#   eval "$(localstack/start.sh)"            # RabbitMQ and S3
#   eval "$(localstack/start.sh --s3-only)"  # S3 only
#
# Idempotent and safe to run many times (and concurrently: per-service locks);
# a second run just verifies and reuses what is running (well under a second).
# Progress goes to stderr; stdout carries ONLY `export NAME=value` lines.
#
# Env: SIGNET_AMQP_PORT (5672), SIGNET_S3_PORT (5000),
#      SIGNET_STACK_DIR (/var/tmp/signet-stack), SIGNET_BUCKETS_FILE (localstack/buckets.txt)
# See rabbitmq.sh and s3.sh for the details of each service.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

s3_only=0
for arg in "$@"; do
    case "$arg" in
    --s3-only) s3_only=1 ;;
    -h|--help) sed -n '2,13p' "$0" >&2; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--s3-only])" ;;
    esac
done

t0=$SECONDS
ensure_stack_dir
# RabbitMQ boots (5-20 s) while the S3 venv installs / moto starts.
rmq_pid=
if [ $s3_only -eq 0 ]; then
    "$here/rabbitmq.sh" start &
    rmq_pid=$!
fi
s3_rc=0
"$here/s3.sh" start || s3_rc=$?
rmq_rc=0
[ -z "$rmq_pid" ] || wait "$rmq_pid" || rmq_rc=$?
[ $rmq_rc -eq 0 ] || die "RabbitMQ failed to start (exit $rmq_rc)"
[ $s3_rc -eq 0 ] || die "S3 failed to start (exit $s3_rc)"
log "stack ready in $((SECONDS - t0))s"

emit() { printf 'export %s=%q\n' "$1" "$2"; }
[ $s3_only -eq 1 ] || emit SIGNET_AMQP_URL "$SIGNET_AMQP_URL"
emit SIGNET_S3_ENDPOINT "$SIGNET_S3_ENDPOINT"
emit AWS_ACCESS_KEY_ID test
emit AWS_SECRET_ACCESS_KEY test
emit AWS_REGION us-east-1
emit AWS_DEFAULT_REGION us-east-1
emit SIGNET_STACK_DIR "$SIGNET_STACK_DIR"
