#!/usr/bin/env bash
# Local RabbitMQ for signet, without systemd.
#
#   localstack/rabbitmq.sh start|stop|status|ctl ARGS...
#
# start: if something already speaks AMQP 0-9-1 on 127.0.0.1:$SIGNET_AMQP_PORT and
#        accepts guest/guest, reuse it. Otherwise install rabbitmq-server (apt) if
#        missing and start a private node whose state lives in
#        $SIGNET_STACK_DIR/rabbitmq-<port>/ (mnesia, logs, config, erlang cookie).
#        The node listens on 127.0.0.1 only (AMQP and Erlang distribution).
# stop:  stops the node only if this script started it (state file
#        rabbitmq-<port>/started-by-signet); never touches a reused broker.
# ctl:   rabbitmqctl against our private node if this script started one, else against
#        the reused broker's node (the system rabbitmqctl; needs root or the rabbitmq
#        user), e.g. `rabbitmq.sh ctl list_queues`. The tests create users with it.
#
# Env: SIGNET_AMQP_PORT (5672), SIGNET_STACK_DIR, SIGNET_RABBITMQ_NODENAME
#      (signet-<port>@localhost), SIGNET_RABBITMQ_DIST_PORT (port+20000),
#      SIGNET_RABBITMQ_TIMEOUT (60 s).
# Single node is all signet needs: quorum queues work on a one-node "cluster"
# (replication factor = cluster size = 1). No management plugin or rabbitmqadmin
# is needed: signet declares its own exchanges/queues over AMQP.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

RMQ_SBIN=/usr/lib/rabbitmq/bin
RMQ_DIR="$SIGNET_STACK_DIR/rabbitmq-$SIGNET_AMQP_PORT"
RMQ_NODE="${SIGNET_RABBITMQ_NODENAME:-signet-$SIGNET_AMQP_PORT@localhost}"
RMQ_DIST_PORT="${SIGNET_RABBITMQ_DIST_PORT:-$((SIGNET_AMQP_PORT + 20000))}"
RMQ_STATE="$RMQ_DIR/started-by-signet"
RMQ_PIDFILE="$RMQ_DIR/node.pid"
: "${SIGNET_RABBITMQ_TIMEOUT:=60}"

# Run a rabbitmq script (server or ctl) against our private node, fully isolated
# from /etc/rabbitmq and /var/lib/rabbitmq. HOME holds the node's erlang cookie.
rmq() {
    local loopback='-kernel inet_dist_use_interface {127,0,0,1}'
    # cd: the Erlang VM drops erl_crash.dump into its working directory otherwise.
    (cd "$RMQ_DIR" && exec env HOME="$RMQ_DIR" \
        ERL_CRASH_DUMP="$RMQ_DIR/log/erl_crash.dump" \
        RABBITMQ_NODENAME="$RMQ_NODE" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$SIGNET_AMQP_PORT" \
        RABBITMQ_DIST_PORT="$RMQ_DIST_PORT" \
        RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" \
        RABBITMQ_LOG_BASE="$RMQ_DIR/log" \
        RABBITMQ_PID_FILE="$RMQ_PIDFILE" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$loopback" \
        RABBITMQ_CTL_ERL_ARGS="$loopback" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        "$@")
}

write_config() {
    mkdir -p "$RMQ_DIR/mnesia" "$RMQ_DIR/log"
    cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# Written by localstack/rabbitmq.sh; private signet dev node, loopback only.
listeners.tcp.default = 127.0.0.1:$SIGNET_AMQP_PORT
loopback_users.guest = true
EOF
    # Our own (empty) env file so /etc/rabbitmq/rabbitmq-env.conf is not sourced.
    echo '# signet: intentionally empty' >"$RMQ_DIR/rabbitmq-env.conf"
    echo '[].' >"$RMQ_DIR/enabled_plugins"
}

amqp_probe() { probe amqp "$SIGNET_AMQP_PORT" guest guest /; }

ours_running() { pid_alive "$RMQ_PIDFILE" beam; }

# The machine's own RabbitMQ (the Debian service) can wedge: its node runs and
# `rabbitmq-diagnostics check_running` passes, but it no longer answers AMQP (seen with
# 3.10.8 after a day of tests creating and deleting thousands of queues). As root, with
# its init script present, restart it: `stop` hangs on a wedged node, so the node is
# killed after a bounded wait. Returns 0 once it answers AMQP again.
restart_wedged_system_broker() {
    [ "$(id -u)" = 0 ] && [ -x /etc/init.d/rabbitmq-server ] || return 1
    log "the machine's RabbitMQ on 127.0.0.1:$SIGNET_AMQP_PORT is wedged: restarting it (/etc/init.d/rabbitmq-server)"
    timeout 30 /etc/init.d/rabbitmq-server stop >&2 8>&- 9>&- || true
    pkill -9 -f 'beam.smp.*-home /var/lib/rabbitmq' || true
    sleep 1
    timeout 120 /etc/init.d/rabbitmq-server start >&2 8>&- 9>&- || { log "its init script failed to start it"; return 1; }
    local deadline=$((SECONDS + SIGNET_RABBITMQ_TIMEOUT))
    until amqp_probe 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { log "restarted, but still no AMQP answer"; return 1; }
        sleep 1
    done
    log "the machine's RabbitMQ answers AMQP again"
}

rmq_start() {
    take_lock "rabbitmq-$SIGNET_AMQP_PORT" 9
    local rc=0
    amqp_probe 2>/dev/null || rc=$?
    if [ $rc -eq 0 ]; then
        if ours_running; then
            log "RabbitMQ node $RMQ_NODE (started by signet) already answers on 127.0.0.1:$SIGNET_AMQP_PORT, reusing it"
        else
            rm -f "$RMQ_STATE"
            log "RabbitMQ (not started by signet) already answers AMQP on 127.0.0.1:$SIGNET_AMQP_PORT with guest/guest, reusing it"
        fi
        release_lock 9
        return 0
    fi
    # A broker that accepts the connection but is slow to answer (a busy host,
    # a node still booting) is asked again until the start-up timeout.
    if [ $rc -eq 3 ] && ! ours_running; then
        local busy_deadline=$((SECONDS + SIGNET_RABBITMQ_TIMEOUT))
        log "something on 127.0.0.1:$SIGNET_AMQP_PORT accepts connections but has not answered AMQP yet; waiting up to ${SIGNET_RABBITMQ_TIMEOUT}s"
        while [ $rc -eq 3 ] && [ $SECONDS -lt $busy_deadline ]; do
            sleep 2
            rc=0
            amqp_probe 2>/dev/null || rc=$?
        done
        if [ $rc -eq 0 ]; then
            log "RabbitMQ answers AMQP on 127.0.0.1:$SIGNET_AMQP_PORT after $((SECONDS + SIGNET_RABBITMQ_TIMEOUT - busy_deadline))s, reusing it"
            release_lock 9
            return 0
        fi
        if [ $rc -eq 3 ]; then
            restart_wedged_system_broker && { release_lock 9; return 0; }
            die "something on 127.0.0.1:$SIGNET_AMQP_PORT accepts connections but gave no AMQP answer in ${SIGNET_RABBITMQ_TIMEOUT}s (a stuck broker? restart it, or set SIGNET_AMQP_PORT)"
        fi
    fi
    if [ $rc -ne 1 ] && ! ours_running; then
        amqp_probe || true
        die "port $SIGNET_AMQP_PORT is in use but does not accept AMQP guest/guest; set SIGNET_AMQP_PORT"
    fi

    if [ ! -x "$RMQ_SBIN/rabbitmq-server" ]; then
        apt_install rabbitmq-server
        # On a systemd host the package starts its own service (listening on all
        # interfaces, node rabbit@$HOSTNAME). If that took our port, reuse it.
        local i
        for i in $(seq 60); do
            if amqp_probe 2>/dev/null; then
                log "the rabbitmq-server package started its own service on $SIGNET_AMQP_PORT; reusing it"
                release_lock 9
                return 0
            fi
            # Nothing booting (no Erlang node on the dist port) after 3 s: go on.
            [ "$i" -lt 6 ] || probe tcp "$RMQ_DIST_PORT" 2>/dev/null || break
            sleep 0.5
        done
    fi

    if ours_running; then
        log "node $RMQ_NODE is running (pid $(cat "$RMQ_PIDFILE")) but not answering yet; waiting"
    else
        if probe tcp "$RMQ_DIST_PORT" 2>/dev/null; then
            die "Erlang distribution port $RMQ_DIST_PORT is already in use (another RabbitMQ node?); set SIGNET_RABBITMQ_DIST_PORT"
        fi
        write_config
        rm -f "$RMQ_DIR/log/erl_crash.dump"
        log "starting RabbitMQ node $RMQ_NODE on 127.0.0.1:$SIGNET_AMQP_PORT (dist port $RMQ_DIST_PORT, dir $RMQ_DIR)"
        rm -f "$RMQ_PIDFILE"
        rmq "$RMQ_SBIN/rabbitmq-server" -detached </dev/null >>"$RMQ_DIR/log/detached.out" 2>&1 8>&- 9>&- ||
            { tail -n 20 "$RMQ_DIR/log/detached.out" >&2; die "rabbitmq-server -detached failed"; }
        echo "$RMQ_NODE" >"$RMQ_STATE"
    fi

    # `rabbitmqctl await_startup` fails until the node has registered with epmd,
    # so poll the AMQP port, then confirm with `rabbitmqctl status`.
    local t0=$SECONDS deadline=$((SECONDS + SIGNET_RABBITMQ_TIMEOUT))
    until amqp_probe 2>/dev/null; do
        if [ -s "$RMQ_DIR/log/erl_crash.dump" ]; then
            rm -f "$RMQ_STATE"; show_logs; die "RabbitMQ node $RMQ_NODE crashed during startup"
        fi
        if [ $((SECONDS - t0)) -ge 20 ] && ! ours_running &&
           ! rmq "$RMQ_SBIN/rabbitmqctl" -q -n "$RMQ_NODE" ping >/dev/null 2>&1; then
            rm -f "$RMQ_STATE"; show_logs; die "RabbitMQ node $RMQ_NODE did not come up (no pid, no ping after 20s)"
        fi
        [ $SECONDS -lt $deadline ] || { show_logs; die "RabbitMQ not answering on $SIGNET_AMQP_PORT after ${SIGNET_RABBITMQ_TIMEOUT}s"; }
        sleep 0.5
    done
    rmq "$RMQ_SBIN/rabbitmqctl" -q -n "$RMQ_NODE" status >/dev/null 2>&1 ||
        log "warning: AMQP answers but 'rabbitmqctl status' failed for $RMQ_NODE"
    log "RabbitMQ ready on 127.0.0.1:$SIGNET_AMQP_PORT after $((SECONDS - t0))s (node $RMQ_NODE)"
    release_lock 9
}

show_logs() {
    local f
    for f in "$RMQ_DIR/log/detached.out" "$RMQ_DIR/log/$RMQ_NODE.log"; do
        [ -s "$f" ] && { log "--- tail $f"; tail -n 25 "$f" >&2; }
    done
    f="$RMQ_DIR/log/erl_crash.dump"
    [ -s "$f" ] && log "$(grep -a -m1 '^Slogan:' "$f") (full dump: $f)"
    return 0
}

rmq_stop() {
    take_lock "rabbitmq-$SIGNET_AMQP_PORT" 9
    if [ ! -f "$RMQ_STATE" ]; then
        log "RabbitMQ on port $SIGNET_AMQP_PORT was not started by signet; leaving it alone"
        release_lock 9; return 0
    fi
    if ours_running || rmq "$RMQ_SBIN/rabbitmqctl" -q -n "$RMQ_NODE" ping >/dev/null 2>&1; then
        log "stopping RabbitMQ node $RMQ_NODE (port $SIGNET_AMQP_PORT)"
        # `stop <pidfile>` waits until the Erlang VM has exited.
        if [ -s "$RMQ_PIDFILE" ]; then
            rmq "$RMQ_SBIN/rabbitmqctl" -q -n "$RMQ_NODE" stop "$RMQ_PIDFILE" >&2
        else
            rmq "$RMQ_SBIN/rabbitmqctl" -q -n "$RMQ_NODE" stop >&2
        fi
    else
        log "RabbitMQ node $RMQ_NODE is not running"
    fi
    rm -f "$RMQ_STATE"
    release_lock 9
}

rmq_status() {
    local rc=0
    amqp_probe 2>/dev/null || rc=$?
    if [ $rc -eq 0 ]; then
        if ours_running; then
            log "RabbitMQ node $RMQ_NODE (started by signet, pid $(cat "$RMQ_PIDFILE")) answers on 127.0.0.1:$SIGNET_AMQP_PORT"
        else
            log "RabbitMQ (not started by signet) answers on 127.0.0.1:$SIGNET_AMQP_PORT"
        fi
        return 0
    fi
    log "no AMQP broker accepting guest/guest on 127.0.0.1:$SIGNET_AMQP_PORT"
    return 3
}

case "${1:-}" in
start) rmq_start ;;
stop) rmq_stop ;;
status) rmq_status ;;
ctl)
    shift
    if [ -f "$RMQ_STATE" ]; then
        rmq "$RMQ_SBIN/rabbitmqctl" -n "$RMQ_NODE" "$@"
    else
        command -v rabbitmqctl >/dev/null || die "no private node and no rabbitmqctl for the reused broker"
        rabbitmqctl "$@"
    fi
    ;;
*) echo "usage: $0 start|stop|status|ctl ARGS  (port: SIGNET_AMQP_PORT=$SIGNET_AMQP_PORT)" >&2; exit 64 ;;
esac
