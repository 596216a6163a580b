#!/usr/bin/env bash
# A real S3 endpoint (SeaweedFS `weed mini`, disk-backed, checks SigV4 signatures) on
# 127.0.0.1 for tests.
#
#   scripts/s3.sh start    fresh data under $BACKFILL_STATE/s3, start, wait until a
#                          signed create-bucket/put/get/delete round trip works;
#                          prints the `env` lines on stdout (nothing else: every
#                          log, and pip's output on a cold cache, goes to stderr)
#   scripts/s3.sh stop     stop it (SIGTERM, then SIGKILL after $BACKFILL_S3_STOP_TIMEOUT
#                          s, default 30; it usually takes 2.4 s); safe to repeat
#   scripts/s3.sh status   exit 0 when running and answering (prints pid, port, RSS), 3 when not
#   scripts/s3.sh env      print BACKFILL_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID,
#                          AWS_SECRET_ACCESS_KEY, AWS_REGION (us-east-1) as exports
#
# Env: BACKFILL_STATE (default /tmp/backfill-test), BACKFILL_CACHE, BACKFILL_S3_PORT
# (preferred S3 port, default 8333; a free one is picked when it is taken),
# BACKFILL_S3_TIMEOUT (seconds to wait for readiness, default 30).
# Clients need path-style addressing. Buckets are NOT created on first upload (as on
# AWS): tests create theirs. Every listener is on 127.0.0.1 on a port chosen here;
# SeaweedFS's telemetry to the internet is switched off.
set -euo pipefail
# shellcheck source=lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"

S3_STATE="$BACKFILL_STATE/s3"
SERVER_STATE="$S3_STATE"  # named by fail_start (lib/common.sh)
S3_LOG="$S3_STATE/logs/weed.out"
MARKER="-dir=$S3_STATE/data"
# Test-only credentials (the server accepts nothing else).
S3_ACCESS_KEY=backfilltestaccesskey
S3_SECRET_KEY=backfill-test-secret-key-not-for-production
S3_REGION=us-east-1

usage() { die "usage: $0 start|stop|status|env"; }

s3_running() { pid_matches "$(cat "$S3_STATE/weed.pid" 2>/dev/null)" "$MARKER"; }

# print_env: the env lines, on fd 3 only (start and env run under env_stdout_only).
print_env() {
    emit_env BACKFILL_TEST_S3_ENDPOINT "http://127.0.0.1:$(cat "$S3_STATE/port")" \
        AWS_ACCESS_KEY_ID "$S3_ACCESS_KEY" \
        AWS_SECRET_ACCESS_KEY "$S3_SECRET_KEY" \
        AWS_REGION "$S3_REGION"
}

probe() {
    "$(python_bin)" "$BACKFILL_SCRIPTS/lib/s3probe.py" "http://127.0.0.1:$(cat "$S3_STATE/port")" \
        "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$S3_REGION"
}

# free_ports N [PREFERRED_FIRST]: N distinct free loopback ports, held open together
# while chosen so that none is handed out twice.
free_ports() {
    "$(python_bin)" - "$@" <<'EOF'
import socket, sys
n, pref = int(sys.argv[1]), (int(sys.argv[2]) if len(sys.argv) > 2 else 0)
socks, ports = [], []
def grab(p):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not block a listener
    s.bind(("127.0.0.1", p))
    socks.append(s)
    ports.append(s.getsockname()[1])
if pref:
    try:
        grab(pref)
    except OSError:
        pass
while len(ports) < n:
    grab(0)
print(" ".join(map(str, ports)))
for s in socks:
    s.close()
EOF
}

cmd_start() {
    if s3_running; then
        log "s3: already running on port $(cat "$S3_STATE/port") (state $S3_STATE)"
        print_env
        return 0
    fi
    ensure_weed
    local t0 ports
    t0="$(now_ms)"
    rm -rf "$S3_STATE"
    mkdir -p "$S3_STATE/data" "$S3_STATE/logs"
    # s3, s3 grpc, master, master grpc, volume, volume grpc, filer, filer grpc, admin, admin grpc
    read -r -a ports <<<"$(free_ports 10 "${BACKFILL_S3_PORT:-8333}")"
    echo "${ports[0]}" >"$S3_STATE/port"
    echo "${ports[*]}" >"$S3_STATE/ports"
    cat >"$S3_STATE/identities.json" <<EOF
{
  "identities": [
    {
      "name": "backfill-test",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
    spawn_daemon "$S3_LOG" "$(weed_bin)" -logdir="$S3_STATE/logs" mini \
        "$MARKER" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="${ports[0]}" -s3.port.grpc="${ports[1]}" \
        -master.port="${ports[2]}" -master.port.grpc="${ports[3]}" \
        -volume.port="${ports[4]}" -volume.port.grpc="${ports[5]}" \
        -filer.port="${ports[6]}" -filer.port.grpc="${ports[7]}" \
        -admin.port="${ports[8]}" -admin.port.grpc="${ports[9]}" -admin.ui=false \
        -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false \
        -master.telemetry=false \
        -s3.config="$S3_STATE/identities.json" \
        -s3.autoCreateBucket=false -s3.allowDeleteBucketNotEmpty=false \
        -filer.localSocket="$S3_STATE/filer.sock" -s3.localSocket="$S3_STATE/s3.sock" \
        >"$S3_STATE/weed.pid"
    log "s3: weed pid $(cat "$S3_STATE/weed.pid"), S3 at http://127.0.0.1:${ports[0]}; waiting for a signed round trip"

    local timeout="${BACKFILL_S3_TIMEOUT:-30}" deadline answered=""
    deadline=$(($(date +%s) + timeout))
    while true; do
        if ! pid_alive "$(cat "$S3_STATE/weed.pid")"; then
            fail_start "s3: weed exited during start-up" "$S3_LOG" "$S3_STATE/logs/weed.INFO"
        fi
        if [ -z "$answered" ] && port_answers "${ports[0]}"; then
            answered="$(( $(now_ms) - t0 ))"
        fi
        if [ -n "$answered" ] && probe 2>"$S3_STATE/logs/probe.err"; then
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            fail_start "s3: no working S3 at 127.0.0.1:${ports[0]} within ${timeout}s (BACKFILL_S3_TIMEOUT); last probe error first" \
                "$S3_STATE/logs/probe.err" "$S3_LOG" "$S3_STATE/logs/weed.INFO"
        fi
        sleep 0.2
    done
    log "s3: ready at http://127.0.0.1:${ports[0]} in $(( $(now_ms) - t0 )) ms (port answered after ${answered} ms; logs in $S3_STATE/logs)"
    print_env
}

cmd_stop() {
    local t0
    t0="$(now_ms)"
    stop_pid "s3 weed" "$S3_STATE/weed.pid" "$MARKER" "${BACKFILL_S3_STOP_TIMEOUT:-30}"
    # weed puts gRPC unix sockets in /tmp, named by port, and leaves them behind when
    # stopped early or killed: remove exactly ours.
    local p
    for p in $(cat "$S3_STATE/ports" 2>/dev/null); do
        rm -f /tmp/seaweedfs-{admin,filer,master,s3,volume}-grpc-"$p".sock
    done
    log "s3: stop took $(( $(now_ms) - t0 )) ms"
}

cmd_status() {
    if s3_running; then
        local pid
        pid="$(cat "$S3_STATE/weed.pid")"
        if probe; then
            echo "s3: running at http://127.0.0.1:$(cat "$S3_STATE/port"); weed pid $pid (RSS $(rss_kb "$pid") KiB); state $S3_STATE"
            return 0
        fi
        echo "s3: weed pid $pid is alive but the S3 round trip failed (see above; log $S3_LOG)"
        return 1
    fi
    echo "s3: not running (state $S3_STATE)"
    return 3
}

cmd_env() {
    s3_running || die "s3: not running (state $S3_STATE); start it with scripts/s3.sh start"
    print_env
}

# start and env: callers source stdout, so only print_env may write there (fd 3);
# everything else, pip installing weed on a cold cache included, goes to stderr.
case "${1:-}" in
    start) env_stdout_only; cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) env_stdout_only; cmd_env ;;
    *) usage ;;
esac
