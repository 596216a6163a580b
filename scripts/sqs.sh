#!/usr/bin/env bash
# An SQS endpoint (moto_server from moto[server], an in-memory emulator: SQS has no
# real local counterpart) on 127.0.0.1 for tests.
#
#   scripts/sqs.sh start    start a fresh one (state under $BACKFILL_STATE/sqs), wait
#                           until a signed create-queue/send/receive/delete round trip
#                           works; prints the `env` line on stdout (nothing else:
#                           every log, and pip's output on a cold cache, goes to stderr)
#   scripts/sqs.sh stop     stop it (SIGTERM, then SIGKILL after 10 s); safe to repeat
#   scripts/sqs.sh status   exit 0 when running and answering (prints pid, port, RSS), 3 when not
#   scripts/sqs.sh env      print BACKFILL_TEST_SQS_ENDPOINT as an export
#
# Env: BACKFILL_STATE (default /tmp/backfill-test), BACKFILL_CACHE, BACKFILL_SQS_PORT
# (preferred port, default 9324; a free one is picked when it is taken),
# BACKFILL_SQS_TIMEOUT (seconds to wait for readiness, default 30).
# moto accepts any credentials and keeps queues in memory only (a restart empties
# them). It prints no credentials: clients bring their own (any will do), e.g. the
# AWS_* that scripts/s3.sh prints, and point at the endpoint with the standard
# AWS_ENDPOINT_URL_SQS or with the queue URLs moto returns.
set -euo pipefail
# shellcheck source=lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"

SQS_STATE="$BACKFILL_STATE/sqs"
SERVER_STATE="$SQS_STATE"  # named by fail_start (lib/common.sh)
SQS_LOG="$SQS_STATE/logs/moto.out"
# moto_server runs through a link in the state dir, so its command line names this
# state dir: the marker that tells our server from any other process.
MOTO_LINK="$SQS_STATE/moto_server"
MARKER="$MOTO_LINK"
# What the probe signs with; moto checks the form of a signature, not the key.
PROBE_KEY=backfilltestaccesskey
PROBE_SECRET=backfill-test-secret-key-not-for-production
PROBE_REGION=us-east-1

usage() { die "usage: $0 start|stop|status|env"; }

sqs_running() { pid_matches "$(cat "$SQS_STATE/moto.pid" 2>/dev/null)" "$MARKER"; }

# print_env: the env line, on fd 3 only (start and env run under env_stdout_only).
print_env() {
    emit_env BACKFILL_TEST_SQS_ENDPOINT "http://127.0.0.1:$(cat "$SQS_STATE/port")"
}

probe() {
    "$(python_bin)" "$BACKFILL_SCRIPTS/lib/sqsprobe.py" "http://127.0.0.1:$(cat "$SQS_STATE/port")" \
        "$PROBE_KEY" "$PROBE_SECRET" "$PROBE_REGION"
}

cmd_start() {
    if sqs_running; then
        log "sqs: already running on port $(cat "$SQS_STATE/port") (state $SQS_STATE)"
        print_env
        return 0
    fi
    ensure_moto
    local t0 port
    t0="$(now_ms)"
    rm -rf "$SQS_STATE"
    mkdir -p "$SQS_STATE/logs"
    port="$(free_port "${BACKFILL_SQS_PORT:-9324}")"
    echo "$port" >"$SQS_STATE/port"
    ln -s "$(moto_bin)" "$MOTO_LINK"
    spawn_daemon "$SQS_LOG" "$MOTO_LINK" -H 127.0.0.1 -p "$port" >"$SQS_STATE/moto.pid"
    log "sqs: moto_server pid $(cat "$SQS_STATE/moto.pid"), SQS at http://127.0.0.1:$port; waiting for a signed round trip"

    local timeout="${BACKFILL_SQS_TIMEOUT:-30}" deadline answered=""
    deadline=$(($(date +%s) + timeout))
    while true; do
        if ! pid_alive "$(cat "$SQS_STATE/moto.pid")"; then
            fail_start "sqs: moto_server exited during start-up" "$SQS_LOG"
        fi
        if [ -z "$answered" ] && port_answers "$port"; then
            answered="$(( $(now_ms) - t0 ))"
        fi
        if [ -n "$answered" ] && probe 2>"$SQS_STATE/logs/probe.err"; then
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            fail_start "sqs: no working SQS at 127.0.0.1:$port within ${timeout}s (BACKFILL_SQS_TIMEOUT); last probe error first" \
                "$SQS_STATE/logs/probe.err" "$SQS_LOG"
        fi
        sleep 0.1
    done
    log "sqs: ready at http://127.0.0.1:$port in $(( $(now_ms) - t0 )) ms (port answered after ${answered} ms; log $SQS_LOG)"
    print_env
}

cmd_stop() {
    local t0
    t0="$(now_ms)"
    stop_pid "sqs moto_server" "$SQS_STATE/moto.pid" "$MARKER" 10
    log "sqs: stop took $(( $(now_ms) - t0 )) ms"
}

cmd_status() {
    if sqs_running; then
        local pid
        pid="$(cat "$SQS_STATE/moto.pid")"
        if probe; then
            echo "sqs: running at http://127.0.0.1:$(cat "$SQS_STATE/port"); moto_server pid $pid (RSS $(rss_kb "$pid") KiB); state $SQS_STATE"
            return 0
        fi
        echo "sqs: moto_server pid $pid is alive but the SQS round trip failed (see above; log $SQS_LOG)"
        return 1
    fi
    echo "sqs: not running (state $SQS_STATE)"
    return 3
}

cmd_env() {
    sqs_running || die "sqs: not running (state $SQS_STATE); start it with scripts/sqs.sh start"
    print_env
}

# start and env: callers source stdout, so only print_env may write there (fd 3);
# everything else, pip installing moto on a cold cache included, goes to stderr.
case "${1:-}" in
    start) env_stdout_only; cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) env_stdout_only; cmd_env ;;
    *) usage ;;
esac
