# shellcheck shell=bash
# Shared helpers for the localstack/ scripts. Sourced, not executed.
# Everything human-readable goes to stderr: stdout is reserved for the
# `export NAME=value` lines printed by start.sh.

LOCALSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

: "${SIGNET_STACK_DIR:=/var/tmp/signet-stack}"
: "${SIGNET_S3_PORT:=5000}"
: "${SIGNET_AMQP_PORT:=5672}"
: "${SIGNET_BUCKETS_FILE:=$LOCALSTACK_DIR/buckets.txt}"
# Version range of moto known to work with these scripts (tested: moto 5.2.5).
: "${SIGNET_MOTO_SPEC:=moto[server]>=5,<6}"
export SIGNET_STACK_DIR SIGNET_S3_PORT SIGNET_AMQP_PORT SIGNET_BUCKETS_FILE

# shellcheck disable=SC2034  # used by the scripts that source this file
SIGNET_VENV="$SIGNET_STACK_DIR/venv"
# shellcheck disable=SC2034
SIGNET_S3_ENDPOINT="http://127.0.0.1:$SIGNET_S3_PORT"
# shellcheck disable=SC2034
SIGNET_AMQP_URL="amqp://guest:guest@127.0.0.1:$SIGNET_AMQP_PORT/%2f"

log() { printf '[signet-stack] %s\n' "$*" >&2; }
die() { printf '[signet-stack] ERROR: %s\n' "$*" >&2; exit 1; }

# PY creates the venv (`$PY -m venv`): SIGNET_PYTHON, else python3 on PATH.
# PROBE_PY runs the stdlib-only probes: the system python when there is one,
# because wrapper shims (pyenv, asdf) add ~100 ms per call.
PY="${SIGNET_PYTHON:-$(command -v python3 || command -v /usr/bin/python3 || true)}"
[ -n "$PY" ] || die "python3 not found (apt-get install -y python3)"
if [ -z "${SIGNET_PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then PROBE_PY=/usr/bin/python3; else PROBE_PY="$PY"; fi

probe() { "$PROBE_PY" "$LOCALSTACK_DIR/lib/probe.py" "$@"; }

ensure_stack_dir() { mkdir -p "$SIGNET_STACK_DIR"; }

# take_lock NAME FD: serialise concurrent runs (e.g. parallel test processes).
# FD 9 is used for service locks, 8 for the venv lock. Daemons started in the
# background must close both (8>&- 9>&-) or they would hold the lock forever.
take_lock() {
    ensure_stack_dir
    eval "exec $2>\"\$SIGNET_STACK_DIR/.\$1.lock\""
    flock -w 600 "$2" || die "timed out waiting for lock $SIGNET_STACK_DIR/.$1.lock"
}
release_lock() { eval "exec $1>&-"; }

# pid_alive PIDFILE PATTERN: pid in PIDFILE is running and its command line
# contains PATTERN (guards against recycled pids).
pid_alive() {
    local pid cmd
    [ -s "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmd" == *"$2"* ]]
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root for: $*"
    fi
}

# start.sh runs rabbitmq.sh and s3.sh in parallel, so both may want apt at once:
# wait for the dpkg lock instead of failing.
apt_install() {
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
    log "apt-get install -y $*"
    as_root "${apt[@]}" install "$@" >&2 ||
        { as_root "${apt[@]}" update >&2 && as_root "${apt[@]}" install "$@" >&2; }
}
