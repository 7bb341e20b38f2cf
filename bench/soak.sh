#!/usr/bin/env bash
# Soak and fault harness (see bench/soak.py for what it injects and checks):
#
#   bench/soak.sh                          # the full run: 10,000 jobs, 60 s S3 outage
#   bench/soak.sh --jobs 300 --outage 15   # the suite's short variant (tests/soak.rs)
#
# Builds signet (release), starts the local stack (moto S3 on 127.0.0.1:5000) and a
# private RabbitMQ node on 127.0.0.1:5673 that the harness restarts, then runs the jobs.
# Prints a Markdown table on stdout; exits 1 on any lost or wrong job.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${SIGNET_SOAK_NO_BUILD:-} ]] || cargo build --release --locked --bin signet >&2
eval "$(bash localstack/start.sh)"
py="$SIGNET_STACK_DIR/venv/bin/python"
"$py" -c 'import pika' 2>/dev/null || "$py" -m pip install -q --disable-pip-version-check 'pika>=1.3' >&2
exec "$py" bench/soak.py "$@"
