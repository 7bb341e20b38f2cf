#!/usr/bin/env bash
# Validates infra/ (see infra/README.md) with real validators, without Docker or a cluster:
#   - hadolint                 infra/Dockerfile (warnings fail)
#   - check-jsonschema         infra/compose.yaml against the Compose specification
#   - kubectl kustomize        infra/k8s (Deployment variant) and infra/k8s/scaledjob
#   - kubernetes-validate      every core object of both renders, --strict, Kubernetes 1.31 and
#                              1.37 (a ScaledJob's pod template is checked as a batch/v1 Job)
#   - infra/validate-crds.mjs  the KEDA and prometheus-operator objects, with the
#                              @kubernetes-models packages (schemas + unknown fields)
#   - infra/check-manifests.py restricted Pod Security Standard, probes, grace period,
#                              references, KEDA triggers, NetworkPolicy, PromQL, policies,
#                              the compose stack's semantics
#   - promtool (if installed)  infra/prometheus.yml, the alert rules and their unit tests
#                              (infra/prometheusrule.test.yaml)
# then a self-test: broken copies of the files (in a temp dir) that each validator must reject.
#
# Tools are installed once, pinned, into ${SIGNET_STACK_DIR:-/var/tmp/signet-stack}:
# infra-venv (PyPI, infra/check-requirements.txt) and infra-node (npm). Needs python3 (3.11)
# with venv, node >= 20 and npm, and network access to PyPI and npm on the first run only.
set -euo pipefail

cd "$(dirname "$0")/.."
stack="${SIGNET_STACK_DIR:-/var/tmp/signet-stack}"
venv="$stack/infra-venv"
node_dir="$stack/infra-node"
requirements=infra/check-requirements.txt
npm_packages=(
  "@kubernetes-models/keda@2.0.0"
  "@kubernetes-models/prometheus-operator@6.0.0"
  "js-yaml@5.5.0"
)
k8s_versions=(1.31 1.37)
python="${SIGNET_PYTHON:-python3}"

log() { echo "check-infra: $*" >&2; }
die() { log "$*"; exit 1; }

start=$SECONDS
mkdir -p "$stack"

# --------------------------------------------------------------------- tools

venv_current() {
  [[ -x "$venv/bin/python" ]] || return 1
  local t
  for t in hadolint check-jsonschema kubernetes-validate kubectl; do
    [[ -x "$venv/bin/$t" ]] || return 1
  done
  # Every pinned distribution installed at exactly its version.
  "$venv/bin/python" - "$requirements" <<'PY' || return 1
import sys
from importlib import metadata
bad = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name} {have} (want {want})")
if bad:
    print("check-infra: venv out of date: " + ", ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
}

ensure_venv() {
  if venv_current; then
    return
  fi
  log "installing the Python tools into $venv"
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
      log "python3 has no venv module; installing python3-venv"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
    else
      die "$python cannot create a venv (install python3-venv)"
    fi
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
  venv_current || die "the venv at $venv does not match $requirements after installing"
}

node_current() {
  [[ -d "$node_dir/node_modules" ]] || return 1
  node - "$node_dir/node_modules" "${npm_packages[@]}" <<'JS' || return 1
const fs = require("fs");
const [dir, ...pkgs] = process.argv.slice(2);
const bad = [];
for (const p of pkgs) {
  const at = p.lastIndexOf("@");
  const name = p.slice(0, at), want = p.slice(at + 1);
  let have = null;
  try { have = JSON.parse(fs.readFileSync(`${dir}/${name}/package.json`, "utf8")).version; } catch {}
  if (have !== want) bad.push(`${name} ${have} (want ${want})`);
}
if (bad.length) { console.error("check-infra: node packages out of date: " + bad.join(", ")); process.exit(1); }
JS
}

ensure_node() {
  command -v node >/dev/null || die "node is required (>= 20)"
  command -v npm >/dev/null || die "npm is required"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  ((major >= 20)) || die "node >= 20 is required (found $(node --version))"
  if node_current; then
    return
  fi
  log "installing the npm packages into $node_dir"
  mkdir -p "$node_dir"
  # No lock file: the three direct dependencies are pinned exactly. They declare node >= 22
  # in `engines`; they are checked here to work on node 20 (npm only warns).
  npm install --prefix "$node_dir" --no-package-lock --no-audit --no-fund --loglevel=error \
    --save-exact "${npm_packages[@]}" >/dev/null
  node_current || die "the npm packages in $node_dir do not match the pins after installing"
}

# One installer at a time (two checks started together share the same tool dirs).
if command -v flock >/dev/null; then
  exec 9>"$stack/infra-tools.lock"
  flock 9
fi
ensure_venv
ensure_node
if command -v flock >/dev/null; then
  flock -u 9
  exec 9>&-
fi
export PATH="$venv/bin:$PATH"
vpy="$venv/bin/python"
setup_secs=$((SECONDS - start))

work="$(mktemp -d "${TMPDIR:-/tmp}/check-infra.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --------------------------------------------------------------------- checks

passed=0
failed=0
failures=()
objects_core=0
objects_crd=0

# run NAME CMD...: a check; its output is shown on failure only.
run() {
  local name="$1" out="$work/out.$((passed + failed))"
  shift
  if "$@" >"$out" 2>&1; then
    passed=$((passed + 1))
    printf 'ok    %s\n' "$name"
    grep -E '^(validate-crds|check-manifests|split|core):' "$out" | sed 's/^/        /' || true
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf 'FAIL  %s\n' "$name"
    sed 's/^/        /' "$out"
  fi
}

hadolint_check() { hadolint --no-color --failure-threshold warning "$1"; }
compose_schema() { check-jsonschema --builtin-schema vendor.compose-spec "$1"; }
compose_semantics() { "$vpy" infra/check-manifests.py compose "$1"; }

# kubernetes-validate exits 0 on a kind it has no schema for (a typo'd apiVersion): treat
# every warning as a failure, so that nothing is skipped.
core_validate() {
  local file="$1" v out n
  n="$(grep -c '^kind:' "$file" || true)"
  for v in "${k8s_versions[@]}"; do
    out="$(kubernetes-validate --strict --quiet -k "$v" "$file" 2>&1)" || { echo "$out"; return 1; }
    if [[ -n "$out" ]]; then
      echo "$out"
      return 1
    fi
  done
  echo "core: $n objects valid (kubernetes-validate --strict, Kubernetes ${k8s_versions[*]})"
}
crd_validate() { node infra/validate-crds.mjs --quiet --node-modules "$node_dir/node_modules" "$1"; }

# The PrometheusRule's groups as a rules file: promtool's own checks (PromQL, templates,
# durations) and the alert unit tests of infra/prometheusrule.test.yaml.
promtool_rules() {
  local d
  d="$(mktemp -d "$work/promtool.XXXXXX")"
  "$vpy" infra/check-manifests.py rules "$1" "$d/rules.yaml" >/dev/null
  cp infra/prometheusrule.test.yaml "$d/"
  promtool check rules "$d/rules.yaml" && promtool test rules "$d/prometheusrule.test.yaml"
}
have_promtool=0
command -v promtool >/dev/null && have_promtool=1

# render DIR OUT: kubectl kustomize, split into OUT.core.yaml and OUT.crds.yaml.
render() {
  kubectl kustomize "$1" >"$2" && "$vpy" infra/check-manifests.py split "$2" "$2.core.yaml" "$2.crds.yaml"
}

check_variant() {
  local dir="$2" variant="$3" r="$work/$1.yaml"
  run "kubectl kustomize $dir" render "$dir" "$r"
  [[ -s "$r.core.yaml" ]] || return 0
  run "kubernetes-validate --strict: $dir core objects" core_validate "$r.core.yaml"
  run "validate-crds.mjs: $dir custom resources" crd_validate "$r.crds.yaml"
  run "check-manifests.py k8s: $dir (restricted PSS, probes, KEDA, NetworkPolicy, PromQL, policy)" \
    "$vpy" infra/check-manifests.py k8s "$r" --variant "$variant"
  objects_core=$((objects_core + $(grep -c '^kind:' "$r.core.yaml" || true)))
  objects_crd=$((objects_crd + $(grep -c '^kind:' "$r.crds.yaml" || true)))
}

echo "== validators"
run "hadolint --failure-threshold warning infra/Dockerfile" hadolint_check infra/Dockerfile
run "check-jsonschema --builtin-schema vendor.compose-spec infra/compose.yaml" compose_schema infra/compose.yaml
run "check-manifests.py compose: infra/compose.yaml + prometheus.yml + policy" compose_semantics infra/compose.yaml
check_variant deployment infra/k8s deployment
check_variant scaledjob infra/k8s/scaledjob scaledjob
run "check-manifests.py policy: examples/dev-policy.toml" "$vpy" infra/check-manifests.py policy examples/dev-policy.toml
# promtool is not on PyPI; it comes with Debian's prometheus package, which
# scripts/setup-debian.sh installs for the test suite. Without it these are reported skipped.
if ((have_promtool)); then
  run "promtool check config infra/prometheus.yml" promtool check config infra/prometheus.yml
  run "promtool check rules + test rules (infra/prometheusrule.test.yaml)" promtool_rules "$work/deployment.yaml"
else
  echo "skip  promtool check config / check rules / test rules: no promtool on PATH (apt-get install prometheus)"
fi

# --------------------------------------------------------------------- self-test
# Each case breaks one thing in a copy of infra/ and runs the one validator that must catch
# it. A validator that accepts its broken copy fails the whole check.

echo "== self-test: broken copies must be rejected"
selftests=0

# mutate FILE OLD NEW: replace the first OLD (which must be there) by NEW.
mutate() {
  "$vpy" - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path, encoding="utf-8").read()
if old not in text:
    sys.exit(f"self-test: {old!r} not found in {path}: the mutation is stale")
open(path, "w", encoding="utf-8").write(text.replace(old, new, 1))
PY
}

# expect_reject DESC FILE OLD NEW STAGE [VARIANT]
#   STAGE: hadolint | compose-schema | compose | core | crds | k8s
expect_reject() {
  local desc="$1" file="$2" old="$3" new="$4" stage="$5" variant="${6:-deployment}"
  local copy="$work/selftest.$selftests" out rc=0
  selftests=$((selftests + 1))
  mkdir -p "$copy"
  cp -r infra "$copy/infra"
  out="$copy/out"
  if ! mutate "$copy/$file" "$old" "$new" >"$out" 2>&1; then
    failed=$((failed + 1)); failures+=("self-test: $desc (mutation)")
    printf 'FAIL  self-test %s: could not break the copy\n' "$desc"; sed 's/^/        /' "$out"
    return
  fi
  local kdir="$copy/infra/k8s" r="$copy/render.yaml"
  [[ "$variant" == scaledjob ]] && kdir="$copy/infra/k8s/scaledjob"
  (
    cd "$copy"
    case "$stage" in
      hadolint) hadolint_check infra/Dockerfile ;;
      compose-schema) compose_schema infra/compose.yaml ;;
      compose) compose_semantics infra/compose.yaml ;;
      core) render "$kdir" "$r" >/dev/null && core_validate "$r.core.yaml" ;;
      crds) render "$kdir" "$r" >/dev/null && crd_validate "$r.crds.yaml" ;;
      k8s) render "$kdir" "$r" >/dev/null && "$vpy" infra/check-manifests.py k8s "$r" --variant "$variant" ;;
      promtool) render "$kdir" "$r" >/dev/null && promtool_rules "$r" ;;
    esac
  ) >"$out" 2>&1 || rc=$?
  local why
  why="$(grep -m1 -E '^[[:space:]]+- |function ".*" not defined|alertname: ' "$out" \
    || grep -m1 -E 'FAIL|ERROR|WARN|DL[0-9]{4}|Unevaluated|not valid' "$out" || true)"
  why="${why#"${why%%[![:space:]]*}"}"
  why="${why:0:160}"
  if ((rc != 0)); then
    passed=$((passed + 1))
    printf 'ok    rejected: %s (%s)\n        %s\n' "$desc" "$stage" "$why"
  else
    failed=$((failed + 1)); failures+=("self-test: $desc was accepted")
    printf 'FAIL  self-test: %s was ACCEPTED by %s\n' "$desc" "$stage"; sed 's/^/        /' "$out"
  fi
}

expect_reject "runtime image tagged :latest" infra/Dockerfile \
  "cc-debian12:nonroot AS runtime" "cc-debian12:latest AS runtime" hadolint
expect_reject "last USER is root" infra/Dockerfile \
  'USER 65532:65532
# Defaults' 'USER root
# Defaults' hadolint
expect_reject "unknown compose key (restart_polcy)" infra/compose.yaml \
  "    stop_grace_period: 60s" $'    stop_grace_period: 60s\n    restart_polcy: always' compose-schema
expect_reject "compose depends_on condition misspelt" infra/compose.yaml \
  "condition: service_completed_successfully" "condition: service_completed" compose-schema
expect_reject "workers not waiting for the init to complete" infra/compose.yaml \
  $'      init-key:\n        condition: service_completed_successfully' $'      init-key:\n        condition: service_started' compose
expect_reject "compose grace period below the drain time" infra/compose.yaml \
  "stop_grace_period: 60s" "stop_grace_period: 20s" compose
expect_reject "Deployment field typo (imagePullPolcy)" infra/k8s/deployment.yaml \
  "imagePullPolicy: IfNotPresent" "imagePullPolcy: IfNotPresent" core
expect_reject "Deployment apiVersion typo (apps/v2)" infra/k8s/deployment.yaml \
  "apiVersion: apps/v1" "apiVersion: apps/v2" core
expect_reject "ScaledJob pod template field typo" infra/k8s/scaledjob/scaledjob.yaml \
  "restartPolicy: Never" "restartPolicyy: Never" core scaledjob
expect_reject 'ScaledObject minReplicaCount: "zero"' infra/k8s/scaledobject.yaml \
  "minReplicaCount: 0" 'minReplicaCount: "zero"' crds
expect_reject "ScaledObject field typo (pollingIntervall)" infra/k8s/scaledobject.yaml \
  "pollingInterval: 15" "pollingIntervall: 15" crds
expect_reject "PodMonitor field typo (podMetricEndpoints)" infra/k8s/common/podmonitor.yaml \
  "podMetricsEndpoints:" "podMetricEndpoints:" crds
expect_reject "unknown KEDA kind (ScaledJobs)" infra/k8s/scaledjob/scaledjob.yaml \
  "kind: ScaledJob" "kind: ScaledJobs" crds scaledjob
expect_reject "KEDA trigger over amqp (ready messages only)" infra/k8s/scaledobject.yaml \
  "        protocol: http" "        protocol: amqp" k8s
expect_reject "ScaledObject minReplicaCount 1" infra/k8s/scaledobject.yaml \
  "minReplicaCount: 0" "minReplicaCount: 1" k8s
expect_reject "writable root filesystem" infra/k8s/deployment.yaml \
  "readOnlyRootFilesystem: true" "readOnlyRootFilesystem: false" k8s
expect_reject "ScaledJob pod may escalate privileges" infra/k8s/scaledjob/scaledjob.yaml \
  "allowPrivilegeEscalation: false" "allowPrivilegeEscalation: true" k8s scaledjob
expect_reject "grace period not above SIGNET_SHUTDOWN_TIMEOUT" infra/k8s/deployment.yaml \
  "terminationGracePeriodSeconds: 60" "terminationGracePeriodSeconds: 30" k8s
expect_reject "readiness probe on /livez" infra/k8s/deployment.yaml \
  "path: /readyz" "path: /livez" k8s
expect_reject "NetworkPolicy egress to any port" infra/k8s/common/networkpolicy.yaml \
  $'        - protocol: TCP\n          port: 443' $'        - protocol: TCP\n          port: 443\n    - {}' k8s
expect_reject "alert with broken PromQL" infra/k8s/common/prometheusrule.yaml \
  "              > 0.25" "              > " k8s
expect_reject 'policy with format "auto"' infra/k8s/common/policy.toml \
  'formats   = ["detached"]' 'formats   = ["auto"]' k8s

if ((have_promtool)); then
  expect_reject "alert annotation with an unknown template function" infra/k8s/common/prometheusrule.yaml \
    "humanizePercentage" "humanizePercentag" promtool
  expect_reject "failure-ratio alert that no longer fires at 50%" infra/k8s/common/prometheusrule.yaml \
    "              > 0.25" "              > 0.75" promtool
fi

# --------------------------------------------------------------------- summary

echo "== summary"
total=$((objects_core + objects_crd))
echo "infra: $total objects validated ($objects_core core objects with kubernetes-validate --strict" \
  "against Kubernetes ${k8s_versions[*]}, $objects_crd custom resources with @kubernetes-models," \
  "both variants through the PSS/KEDA/NetworkPolicy/PromQL checks), 1 Dockerfile (hadolint)," \
  "1 compose file (Compose spec + semantics), promtool $([[ $have_promtool == 1 ]] && echo "on 1 config + 6 alert rules" || echo skipped)," \
  "$selftests broken copies rejected by the self-test;" \
  "$((SECONDS - start)) s (tools $setup_secs s)"
if ((failed)); then
  printf 'check-infra: failed: %s\n' "${failures[@]}" >&2
fi
echo "infra: $passed passed, $failed failed"
((failed == 0))
