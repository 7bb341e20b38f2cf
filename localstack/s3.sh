#!/usr/bin/env bash
# Local S3 for signet: moto's server, installed in a venv under SIGNET_STACK_DIR.
#
#   localstack/s3.sh start|stop|restart|status
#
# Env: SIGNET_S3_PORT (default 5000), SIGNET_STACK_DIR (default /var/tmp/signet-stack),
#      SIGNET_MOTO_SPEC (pip requirement, default 'moto[server]>=5,<6').
# moto is installed with one small patch, patches/moto-kms-sign-digest.py: KMS Sign
# with MessageType=DIGEST signs the digest as given (moto 5.2 hashes it again).
# Files: $SIGNET_STACK_DIR/venv, s3-<port>.pid, s3-<port>.log
#
# moto keeps everything in memory: stopping the server loses all buckets and
# objects. `start` and `restart` therefore (re-)run the bucket hook
# (init/01-buckets.py) every time.
# Tests that stop S3 to simulate an outage must use their own instance on a
# separate port (e.g. SIGNET_S3_PORT=5100 localstack/s3.sh start ... stop), never
# the shared one on 5000 that other tests and the demo are using.
#
# Human-readable output goes to stderr; nothing is printed on stdout.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PIDFILE="$SIGNET_STACK_DIR/s3-$SIGNET_S3_PORT.pid"
LOGFILE="$SIGNET_STACK_DIR/s3-$SIGNET_S3_PORT.log"
: "${SIGNET_S3_TIMEOUT:=30}"
MOTO_PATCH_MARK="patched: kms-sign-digest"

venv_ok() {
    [ -x "$SIGNET_VENV/bin/moto_server" ] && [ -f "$SIGNET_VENV/.signet-spec" ] &&
        [ "$(head -n1 "$SIGNET_VENV/.signet-spec")" = "$SIGNET_MOTO_SPEC" ] &&
        grep -qx "$MOTO_PATCH_MARK" "$SIGNET_VENV/.signet-spec" &&
        "$SIGNET_VENV/bin/python" -c '' 2>/dev/null
}

ensure_venv() {
    venv_ok && return 0
    take_lock venv 8
    if venv_ok; then release_lock 8; return 0; fi
    local t0=$SECONDS
    if ! "$SIGNET_VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$SIGNET_VENV"
        log "creating venv $SIGNET_VENV ($PY -m venv)"
        if ! "$PY" -m venv "$SIGNET_VENV" >&2; then
            # Debian's python3 ships without ensurepip unless python3-venv is installed.
            rm -rf "$SIGNET_VENV"
            command -v apt-get >/dev/null || die "'$PY -m venv' failed"
            apt_install python3-venv
            PY=/usr/bin/python3
            "$PY" -m venv "$SIGNET_VENV" >&2 || die "'$PY -m venv' failed even after installing python3-venv"
        fi
    fi
    log "pip install '$SIGNET_MOTO_SPEC' boto3 into $SIGNET_VENV (takes a while the first time)"
    "$SIGNET_VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        "$SIGNET_MOTO_SPEC" 'boto3>=1.34' 'jsonschema>=4.18' 'pika>=1.3' >&2 || die "pip install failed"
    # moto 5.2 hashes the digest of a KMS Sign with MessageType=DIGEST again; this small
    # patch (see the file) makes it sign the digest as AWS KMS does.
    "$SIGNET_VENV/bin/python" "$LOCALSTACK_DIR/patches/moto-kms-sign-digest.py" ||
        die "cannot patch moto's KMS Sign (localstack/patches/moto-kms-sign-digest.py)"
    {
        printf '%s\n' "$SIGNET_MOTO_SPEC" "$MOTO_PATCH_MARK"
        "$SIGNET_VENV/bin/python" -c 'import moto, boto3; print("moto", moto.__version__, "boto3", boto3.__version__)'
    } >"$SIGNET_VENV/.signet-spec.tmp"
    mv "$SIGNET_VENV/.signet-spec.tmp" "$SIGNET_VENV/.signet-spec"
    log "venv ready in $((SECONDS - t0))s: $(tail -n1 "$SIGNET_VENV/.signet-spec")"
    release_lock 8
}

bucket_list() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$SIGNET_BUCKETS_FILE" | grep -v '^$' || true; }

run_bucket_hook() {
    # Fast path (no boto3 import): every bucket already listed by an unsigned GET /.
    # shellcheck disable=SC2046
    if probe s3 "$SIGNET_S3_ENDPOINT" $(bucket_list) 2>/dev/null; then
        log "all buckets in $(basename "$SIGNET_BUCKETS_FILE") exist"
        return 0
    fi
    SIGNET_S3_ENDPOINT="$SIGNET_S3_ENDPOINT" \
    AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" \
    AWS_REGION="${AWS_REGION:-us-east-1}" \
        "$SIGNET_VENV/bin/python" "$LOCALSTACK_DIR/init/01-buckets.py" ||
        die "bucket hook failed against $SIGNET_S3_ENDPOINT"
}

s3_start() {
    take_lock "s3-$SIGNET_S3_PORT" 9
    local rc=0
    probe s3 "$SIGNET_S3_ENDPOINT" || rc=$?
    case $rc in
    0)
        if pid_alive "$PIDFILE" moto_server; then
            log "S3 (moto, pid $(cat "$PIDFILE")) already running on $SIGNET_S3_ENDPOINT, reusing it"
        else
            log "an S3 not started by s3.sh already answers on $SIGNET_S3_ENDPOINT, reusing it"
        fi
        ensure_venv
        ;;
    1)
        ensure_venv
        rm -f "$PIDFILE"
        log "starting moto_server on 127.0.0.1:$SIGNET_S3_PORT (log: $LOGFILE)"
        # setsid: own session, so the server outlives the calling shell / test
        # harness process group. The child writes its own pid before exec.
        printf '\n=== %s s3.sh start\n' "$(date -Is)" >>"$LOGFILE"
        # shellcheck disable=SC2016  # $$ / $1 expand in the child shell
        setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDFILE" \
            "$SIGNET_VENV/bin/moto_server" -H 127.0.0.1 -p "$SIGNET_S3_PORT" \
            </dev/null >>"$LOGFILE" 2>&1 8>&- 9>&- &
        local deadline=$((SECONDS + SIGNET_S3_TIMEOUT)) t0=$SECONDS
        until probe s3 "$SIGNET_S3_ENDPOINT" 2>/dev/null; do
            if [ -s "$PIDFILE" ] && ! pid_alive "$PIDFILE" moto_server; then
                tail -n 20 "$LOGFILE" >&2
                die "moto_server exited during startup (see $LOGFILE)"
            fi
            [ $SECONDS -lt $deadline ] || { tail -n 20 "$LOGFILE" >&2; die "S3 not ready after ${SIGNET_S3_TIMEOUT}s"; }
            sleep 0.2
        done
        log "S3 ready on $SIGNET_S3_ENDPOINT after $((SECONDS - t0))s (pid $(cat "$PIDFILE"))"
        ;;
    *)
        die "port $SIGNET_S3_PORT is in use by something that is not S3; set SIGNET_S3_PORT"
        ;;
    esac
    run_bucket_hook
    release_lock 9
}

s3_stop() {
    take_lock "s3-$SIGNET_S3_PORT" 9
    if pid_alive "$PIDFILE" moto_server; then
        local pid
        pid="$(cat "$PIDFILE")"
        log "stopping moto_server pid $pid (port $SIGNET_S3_PORT)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do pid_alive "$PIDFILE" moto_server || break; sleep 0.1; done
        if pid_alive "$PIDFILE" moto_server; then
            log "pid $pid ignored SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        rm -f "$PIDFILE"
        for _ in $(seq 50); do probe tcp "$SIGNET_S3_PORT" 2>/dev/null || break; sleep 0.1; done
    else
        rm -f "$PIDFILE"
        if probe tcp "$SIGNET_S3_PORT" 2>/dev/null; then
            log "port $SIGNET_S3_PORT is served by something s3.sh did not start; leaving it alone"
        else
            log "S3 on port $SIGNET_S3_PORT is not running"
        fi
    fi
    release_lock 9
}

s3_status() {
    local rc=0
    probe s3 "$SIGNET_S3_ENDPOINT" 2>/dev/null || rc=$?
    if [ $rc -eq 0 ]; then
        if pid_alive "$PIDFILE" moto_server; then
            log "S3 running on $SIGNET_S3_ENDPOINT (moto, pid $(cat "$PIDFILE"))"
        else
            log "S3 answering on $SIGNET_S3_ENDPOINT (not started by s3.sh)"
        fi
        return 0
    fi
    log "S3 not running on $SIGNET_S3_ENDPOINT"
    return 3
}

case "${1:-}" in
start) s3_start ;;
stop) s3_stop ;;
restart) s3_stop; s3_start ;;
status) s3_status ;;
*) echo "usage: $0 start|stop|restart|status   (port: SIGNET_S3_PORT=$SIGNET_S3_PORT)" >&2; exit 64 ;;
esac
