#!/usr/bin/env bash
# Stop signet's local stack.
#
#   localstack/stop.sh          # stop moto (S3) on SIGNET_S3_PORT; RabbitMQ is left alone
#   localstack/stop.sh --all    # also stop RabbitMQ on SIGNET_AMQP_PORT, but only if
#                               # start.sh started it (state file
#                               # $SIGNET_STACK_DIR/rabbitmq-<port>/started-by-signet);
#                               # a broker that start.sh merely reused is never stopped.
# Data: moto's buckets/objects are in memory and are lost; the RabbitMQ node's
# data stays in $SIGNET_STACK_DIR/rabbitmq-<port>/mnesia (delete it for a clean slate).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

all=0
for arg in "$@"; do
    case "$arg" in
    --all) all=1 ;;
    -h|--help) sed -n '2,10p' "$0" >&2; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--all])" ;;
    esac
done

"$here/s3.sh" stop
if [ $all -eq 1 ]; then
    "$here/rabbitmq.sh" stop
else
    log "leaving RabbitMQ alone (use --all to stop a node started by start.sh)"
fi
