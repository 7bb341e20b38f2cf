#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, builds, and
# runs every test (unit, integration against the real verifiers). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-debian.sh
# The real broker and S3 server the worker tests talk to (reused if already running).
stack_env="$(bash localstack/start.sh)"
eval "$stack_env"
cargo build --release --locked --all-targets
# Fuzz targets, briefly (20 s each), after replaying every kept crash input: before the
# test runner, whose summary stays the last thing printed.
bash scripts/fuzz.sh 20
# The deployment files (infra/) against real validators: hadolint, the Compose schema,
# kubernetes-validate, the KEDA and Prometheus-operator schemas.
bash scripts/check-infra.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --locked --no-fail-fast
else
  cargo test --release --locked --no-fail-fast
fi
