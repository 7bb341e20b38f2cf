#!/usr/bin/env bash
# A local signing demo, end to end: generate a sealed key, sign sample packages, and check
# every output with the real tools (rpmkeys, debsig-verify, gpg, sqv, apt-get, sha256sum).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-debian.sh
cargo build --release --locked
signet=$PWD/target/release/signet
verify=$PWD/tests/support/verifiers.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/signet-demo.XXXXXX")
echo "demo: working in $work" >&2
head -c 32 /dev/urandom | base64 > "$work/passphrase"
export SIGNET_VAULT="dir:$work/vault" SIGNET_VAULT_PASSPHRASE_FILE="$work/passphrase"

echo "== generate a sealed Ed25519 key" >&2
"$signet" keys generate demo --algo ed25519 --uid "signet demo <demo@example.org>"
"$signet" keys export demo > "$work/demo.asc"
"$signet" keys list

echo "== build sample packages (rpmbuild, dpkg-deb, apt-ftparchive, createrepo_c)" >&2
bash tests/support/fixtures.sh all "$work/in" >/dev/null

echo "== sign" >&2
"$signet" sign --key demo --out "$work/out" \
  "$work"/in/rpm/*.rpm "$work"/in/deb/*.deb "$work/in/files/hello-1.0.tar.gz" "$work/in/rpmrepo/repodata/repomd.xml"
"$signet" sign --key demo --format apt-release --out "$work/apt-out" "$work/in/apt/Release"
cp "$work/apt-out/InRelease" "$work/apt-out/Release.gpg" "$work/in/apt/"

echo "== verify with the real tools" >&2
for f in "$work"/out/*.rpm; do bash "$verify" verify_rpm "$work/demo.asc" "$f" && echo "rpmkeys:       OK $(basename "$f")"; done
for f in "$work"/out/*.deb; do bash "$verify" verify_deb "$work/demo.asc" "$f" && echo "debsig-verify: OK $(basename "$f")"; done
for f in hello-1.0.tar.gz repomd.xml SHA256SUMS manifest.json; do
  bash "$verify" verify_gpg "$work/demo.asc" "$work/out/$f.asc" "$work/out/$f" && echo "gpg:           OK $f.asc"
  bash "$verify" verify_sqv "$work/demo.asc" "$work/out/$f.asc" "$work/out/$f" && echo "sqv:           OK $f.asc"
done
bash "$verify" verify_sha256sums "$work/out" >/dev/null && echo "sha256sum -c:  OK SHA256SUMS"
bash "$verify" verify_apt_repo "$work/demo.asc" "$work/in/apt" && echo "apt-get update: OK flat repository signed by signet"
"$signet" verify --cert "$work/demo.asc" "$work"/out/* "$work/in/apt/InRelease"
echo "demo: all outputs verified; outputs in $work/out" >&2
