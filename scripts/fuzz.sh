#!/usr/bin/env bash
# Fuzzes signet's parsers with libFuzzer through cargo-fuzz, on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 20: the suite's short run; 600 for a real session).
# TARGETs: rpm deb job policy audit (default: all).
#
# Stable Rust: cargo-fuzz needs nightly only for its sanitizers; `--sanitizer none` builds
# with the stable compiler's SanitizerCoverage passes (`-Cpasses=sancov-module`), which is
# all libFuzzer needs for coverage guidance. Memory bugs are still caught where Rust's own
# checks catch them (bounds, overflow: fuzz builds have debug assertions on), and
# libFuzzer's -malloc_limit_mb catches allocations sized by hostile lengths.
#
# Every input in fuzz/regressions/TARGET/ (crashes found earlier, kept as tests) is run
# first; then the target fuzzes from its seeds (made from the test fixtures) plus the
# corpus kept in fuzz/corpus/TARGET/ (not committed). A crash stops the run with its input
# in fuzz/artifacts/TARGET/: copy it to fuzz/regressions/TARGET/ once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(rpm deb job policy audit)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2 >&2
fi
cargo fuzz build --sanitizer none -O >&2

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
bash tests/support/fixtures.sh all "$seeds/fx" >/dev/null
mkdir -p "$seeds"/{rpm,deb,job,policy,audit}
cp "$seeds"/fx/rpm/*.rpm "$seeds/rpm/"
cp "$seeds"/fx/deb/*.deb "$seeds/deb/"
cp schemas/examples/job.json "$seeds/job/"
cp examples/dev-policy.toml "$seeds/policy/"
printf '\x03\x00\x01\x05abc' >"$seeds/audit/edit"
printf '\x04\x01\x02\x00' >"$seeds/audit/remove"
printf '\x05\x02\x04\x00' >"$seeds/audit/swap"

for t in "${targets[@]}"; do
  bin=$(ls -d fuzz/target/*/release/"$t" | head -1)
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/regressions/$t"
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    echo "fuzz: $t: replaying $(ls "fuzz/regressions/$t" | wc -l) regression inputs" >&2
    "$bin" -rss_limit_mb=2048 -malloc_limit_mb=1024 "fuzz/regressions/$t"/* >/dev/null 2>"fuzz/artifacts/$t/replay.log" ||
      { tail -40 "fuzz/artifacts/$t/replay.log" >&2; echo "fuzz: $t: a regression input fails again" >&2; exit 1; }
  fi
  echo "fuzz: $t: fuzzing for ${secs}s" >&2
  log="fuzz/artifacts/$t/fuzz.log"
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 \
      "fuzz/corpus/$t" "$seeds/$t" >/dev/null 2>"$log"; then
    tail -40 "$log" >&2
    echo "fuzz: $t: crash; input saved under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  echo "fuzz: $t: ${secs}s, $runs runs, $cov, no crash" >&2
done
