# shellcheck shell=bash
# Shared helpers for the test-infrastructure scripts: paths, loud failures,
# free ports, and starting/stopping background servers by recorded PID.
# Source it; it defines functions only (plus a few path variables).

BACKFILL_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BACKFILL_REPO="$(cd "$BACKFILL_SCRIPTS/.." && pwd)"
# Where downloads, the venv, extracted jars and compiled helpers live (kept across runs).
BACKFILL_CACHE="${BACKFILL_CACHE:-$HOME/.cache/backfill}"
# Where running servers keep their data, logs and PIDs (thrown away on each start).
BACKFILL_STATE="${BACKFILL_STATE:-/tmp/backfill-test}"
HADOOP_VERSION=2.7.3
HADOOP_HOME_CACHE="$BACKFILL_CACHE/hadoop-$HADOOP_VERSION"
HADOOP_JARS="$HADOOP_HOME_CACHE/jars"
BACKFILL_VENV="$BACKFILL_CACHE/venv"

_bf_prog="$(basename "${0:-backfill}")"

log() { printf '%s: %s\n' "$_bf_prog" "$*" >&2; }

# The stdout rule. Callers source the stdout of `hdfs.sh start|env` and `s3.sh
# start|env` (test-servers.sh, eval "$(scripts/s3.sh start)"), so nothing but
# `export NAME=VALUE` lines may reach it. Those commands call env_stdout_only first:
# the real stdout is kept as fd 3 for emit_env and fd 1 becomes stderr, so whatever
# else prints (pip on a cold cache, javac, a log line, a tool) goes to stderr.
env_stdout_only() { exec 3>&1 1>&2; }

# What a sourced env line must look like (test-servers.sh checks every line with it):
# the value is restricted to characters that mean nothing to the shell, so sourcing
# such a line can only set a variable.
# shellcheck disable=SC2034  # used by test-servers.sh and emit_env
BACKFILL_ENV_LINE_RE='^export [A-Z_][A-Z0-9_]*=[A-Za-z0-9_./:@%+,=-]+$'

# emit_env NAME VALUE [NAME VALUE...]: print `export NAME=VALUE` lines on fd 3 (see
# env_stdout_only); refuses a value that would not survive being sourced unquoted.
emit_env() {
    local line
    while [ $# -ge 2 ]; do
        line="export $1=$2"
        [[ "$line" =~ $BACKFILL_ENV_LINE_RE ]] \
            || die "will not print '$line': the value must be non-empty and use only A-Z a-z 0-9 _ . / : @ % + , = - (is BACKFILL_STATE a path with spaces?)"
        printf '%s\n' "$line" >&3
        shift 2
    done
}

die() {
    printf '%s: ERROR: %s\n' "$_bf_prog" "$*" >&2
    exit 1
}

# die_with_logs "message" LOGFILE...: fail and show the end of each log.
die_with_logs() {
    local msg="$1"; shift
    printf '%s: ERROR: %s\n' "$_bf_prog" "$msg" >&2
    show_logs "$@"
    exit 1
}

# show_logs LOGFILE...: print the end of each log to stderr.
show_logs() {
    local f
    for f in "$@"; do
        if [ -f "$f" ]; then
            printf '%s: ---- last 40 lines of %s ----\n' "$_bf_prog" "$f" >&2
            tail -n 40 "$f" >&2
            printf '%s: ---- end of %s ----\n' "$_bf_prog" "$f" >&2
        else
            printf '%s: (log %s does not exist)\n' "$_bf_prog" "$f" >&2
        fi
    done
}

# fail_start MSG LOG...: a server script's start failed: say why, show the logs as
# they were, stop what it started (its cmd_stop), and exit naming the state it keeps
# (SERVER_STATE, which each server script sets).
fail_start() {
    local msg="$1"; shift
    printf '%s: ERROR: %s\n' "$_bf_prog" "$msg" >&2
    show_logs "$@"
    cmd_stop 2>/dev/null || true
    die "$msg (logs above; state kept in ${SERVER_STATE:-?})"
}

need_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"
}

python_bin() {
    if command -v python3 >/dev/null 2>&1; then echo python3; else die "python3 is required (Python 3.11 expected)"; fi
}

# java_home: a JDK that runs Hadoop 2.7.3 (tested with 17). Java 23+ breaks Hadoop's
# login code (Subject.getSubject), so a newer `java` on PATH is passed over for an
# installed 17/21/11. Override with BACKFILL_JAVA_HOME. Prints the JDK's home.
java_home() {
    if [ -n "${BACKFILL_JAVA_HOME:-}" ]; then
        [ -x "$BACKFILL_JAVA_HOME/bin/java" ] || die "BACKFILL_JAVA_HOME=$BACKFILL_JAVA_HOME has no bin/java"
        echo "$BACKFILL_JAVA_HOME"; return
    fi
    local cand v
    for cand in "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*-17-*/bin/java /usr/lib/jvm/*17*/bin/java \
        /usr/lib/jvm/*-21-*/bin/java /usr/lib/jvm/*-11-*/bin/java; do
        [ -n "$cand" ] && [ -x "$cand" ] || continue
        cand="$(readlink -f "$cand")"
        v="$("$cand" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')"
        case "$v" in 1.8|11|17|21) dirname "$(dirname "$cand")"; return ;; esac
    done
    die "no usable Java for Hadoop 2.7.3 (needs 8/11/17/21, 17 tested; Java 23+ fails): apt-get install openjdk-17-jdk-headless, or set BACKFILL_JAVA_HOME"
}

# Milliseconds since the epoch (for timings printed by the scripts).
now_ms() { "$(python_bin)" -c 'import time; print(int(time.time()*1000))'; }

# port_is_free PORT: true when nothing listens on 127.0.0.1:PORT and we can bind it.
port_is_free() {
    "$(python_bin)" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# As servers do: a port whose old connections linger in TIME_WAIT is free to listen on.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# free_port [PREFERRED]: print PREFERRED if it is free, else a free port chosen by the kernel.
free_port() {
    if [ -n "${1:-}" ] && port_is_free "$1"; then echo "$1"; return; fi
    "$(python_bin)" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# port_answers PORT: true when a TCP connection to 127.0.0.1:PORT succeeds.
port_answers() {
    "$(python_bin)" - "$1" <<'EOF'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
EOF
}

# spawn_daemon LOGFILE CMD...: start CMD in its own session (so it outlives the
# calling script and its process group), output to LOGFILE, no other fd inherited;
# prints its PID.
# The PID is CMD's own (python execs it), so it can be killed directly.
spawn_daemon() {
    local logfile="$1"; shift
    "$(python_bin)" -c '
import os, sys
try:
    os.setsid()
except OSError:
    pass  # already a process-group leader (job control on): still its own group
# Only stdin/stdout/stderr: a daemon holding an inherited fd (the env fd 3 of
# env_stdout_only, a pipe of the caller) would keep a caller that reads the output
# of s3.sh start through a pipe waiting forever.
os.closerange(3, os.sysconf("SC_OPEN_MAX"))
os.execvp(sys.argv[1], sys.argv[1:])
' "$@" >"$logfile" 2>&1 </dev/null &
    echo $!
}

# pid_matches PID MARKER: true when PID is alive and its command line contains MARKER
# (guards against killing an unrelated process that reused a stale PID).
pid_matches() {
    local pid="$1" marker="$2"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# pid_alive PID: the process exists and is not a zombie (for a PID we just spawned;
# its command line can read empty while it execs, so pid_matches would misjudge it).
pid_alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [ "$state" != Z ]
}

# stop_pid NAME PIDFILE MARKER [TIMEOUT_S]: TERM, wait, then KILL. Safe when not running.
stop_pid() {
    local name="$1" pidfile="$2" marker="$3" timeout="${4:-30}"
    if [ ! -f "$pidfile" ]; then
        log "$name: not running (no $pidfile)"
        return 0
    fi
    local pid
    pid="$(cat "$pidfile")"
    if ! pid_matches "$pid" "$marker"; then
        log "$name: not running (stale pid $pid)"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while pid_matches "$pid" "$marker"; do
        if [ "$waited" -ge $((timeout * 10)) ]; then
            log "$name: pid $pid still alive after ${timeout}s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$pidfile"
    log "$name: stopped (pid $pid)"
}

# rss_kb PID: resident set size of a process in KiB (empty when gone). From /proc,
# so it needs no procps (not on a minimal Debian).
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# pids_with MARKER: PIDs of live processes whose command line contains MARKER.
pids_with() {
    local d
    for d in /proc/[0-9]*; do
        tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- "$1" && echo "${d#/proc/}"
    done
    return 0
}
