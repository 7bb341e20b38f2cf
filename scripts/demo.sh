#!/usr/bin/env bash
# signet end to end on this machine: start the local stack (RabbitMQ + an S3 server), seal a
# key in a vault, upload sample packages, run a worker, submit a sign job and print its
# completion event, then check every output with the real tools (rpmkeys, debsig-verify,
# gpg, sqv, sha256sum, apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-debian.sh
stack_env="$(bash localstack/start.sh)"
eval "$stack_env"
cargo build --release --locked
signet=$PWD/target/release/signet
verify=$PWD/tests/support/verifiers.sh
py="$SIGNET_STACK_DIR/venv/bin/python"

work=$(mktemp -d "${TMPDIR:-/tmp}/signet-demo.XXXXXX")
worker_pid=
cleanup() { [[ -n $worker_pid ]] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" || true; }
trap cleanup EXIT
echo "demo: working in $work" >&2
head -c 32 /dev/urandom | base64 > "$work/passphrase"
export SIGNET_VAULT="dir:$work/vault" SIGNET_VAULT_PASSPHRASE_FILE="$work/passphrase"
export SIGNET_NAMESPACE="demo-$(date +%s)"
run_id=${SIGNET_NAMESPACE#demo-}
# Who may sign what (deny by default), and where every signature is recorded.
export SIGNET_POLICY="$PWD/examples/dev-policy.toml" SIGNET_AUDIT="s3://signet-audit/demo-$run_id/"

echo "== 1. a signing key, sealed in the vault" >&2
"$signet" keys generate release --algo ed25519 --uid "signet demo <release@example.org>"
"$signet" keys export release > "$work/release.asc"

echo "== 2. sample packages (rpmbuild, dpkg-deb, createrepo_c, apt-ftparchive), uploaded to s3://incoming" >&2
bash tests/support/fixtures.sh all "$work/in" >/dev/null
"$py" - "$work/in" "$run_id" <<'PY'
import os, sys, boto3
root, run = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=os.environ["SIGNET_S3_ENDPOINT"])
for rel in ["rpm/hello-1.0-1.noarch.rpm", "rpm/world-2.0-1.noarch.rpm", "deb/hello_1.0_all.deb",
            "deb/hello-zst_1.0_all.deb", "files/hello-1.0.tar.gz", "rpmrepo/repodata/repomd.xml"]:
    s3.upload_file(os.path.join(root, rel), "incoming", f"builds/{run}/{os.path.basename(rel)}")
PY

echo "== 3. a worker (it dials out to RabbitMQ and S3; no inbound ports), policy $SIGNET_POLICY" >&2
"$signet" worker > "$work/worker.log" 2>&1 &
worker_pid=$!

echo "== 4. submit the job and wait for its completion event" >&2
artifacts=()
for f in hello-1.0-1.noarch.rpm world-2.0-1.noarch.rpm hello_1.0_all.deb hello-zst_1.0_all.deb hello-1.0.tar.gz repomd.xml; do
  artifacts+=("s3://incoming/builds/$run_id/$f")
done
"$signet" submit --key release --output-bucket signed --output-prefix "releases/$run_id/" \
  --job-id "demo-$run_id" --wait "${artifacts[@]}" | tee "$work/event.json" | "$py" -m json.tool

echo "== 5. download the outputs and check them with the real tools" >&2
mkdir -p "$work/out"
"$py" - "$work/out" "releases/$run_id/" <<'PY'
import os, sys, boto3
dest, prefix = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=os.environ["SIGNET_S3_ENDPOINT"])
for o in s3.list_objects_v2(Bucket="signed", Prefix=prefix)["Contents"]:
    s3.download_file("signed", o["Key"], os.path.join(dest, o["Key"][len(prefix):]))
PY
cert=$work/release.asc out=$work/out
for f in "$out"/*.rpm; do bash "$verify" verify_rpm "$cert" "$f" && echo "rpmkeys --checksig: OK $(basename "$f")"; done
for f in "$out"/*.deb; do bash "$verify" verify_deb "$cert" "$f" && echo "debsig-verify:      OK $(basename "$f")"; done
for f in hello-1.0.tar.gz repomd.xml SHA256SUMS manifest.json; do
  bash "$verify" verify_gpg "$cert" "$out/$f.asc" "$out/$f" && echo "gpg --verify:       OK $f.asc"
  bash "$verify" verify_sqv "$cert" "$out/$f.asc" "$out/$f" && echo "sqv:                OK $f.asc"
done
bash "$verify" verify_sha256sums "$out" >/dev/null && echo "sha256sum -c:       OK SHA256SUMS"

echo "== 6. an APT repository signed locally (signet sign, no broker) and read by apt-get" >&2
"$signet" sign --key release --format apt-release --out "$work/apt-out" "$work/in/apt/Release" >/dev/null
cp "$work/apt-out/InRelease" "$work/apt-out/Release.gpg" "$work/in/apt/"
bash "$verify" verify_apt_repo "$cert" "$work/in/apt" && echo "apt-get update:     OK flat repository signed by signet"

echo "== 7. the audit trail: one hash-chained record per signing run, in $SIGNET_AUDIT" >&2
"$signet" audit verify

echo "demo: every output verified; outputs in $out, worker log in $work/worker.log" >&2
