#!/usr/bin/env bash
# A real single-node HDFS (Hadoop 2.7.3 NameNode + DataNode) on 127.0.0.1 for tests.
#
#   scripts/hdfs.sh start    format a fresh file system under $BACKFILL_STATE/hdfs, start
#                            both daemons, wait until the DataNode has reported its
#                            blocks; prints the `env` lines on stdout (nothing
#                            else: logs and installer output go to stderr)
#   scripts/hdfs.sh stop     stop both (SIGTERM, then SIGKILL after 30 s); safe to repeat
#   scripts/hdfs.sh status   exit 0 when running (prints pids, port, RSS), 3 when not
#   scripts/hdfs.sh env      print `export BACKFILL_TEST_HDFS=hdfs://127.0.0.1:PORT` and
#                            `export HADOOP_CONF_DIR=...`
#   scripts/hdfs.sh datanode-stop    stop only the DataNode (fault tests: reads must fail
#                                    or recover, never come back short)
#   scripts/hdfs.sh datanode-start   start it again on the same data and wait until it
#                                    has re-registered and reported its blocks
#
# Env: BACKFILL_STATE (default /tmp/backfill-test), BACKFILL_CACHE, BACKFILL_HDFS_PORT
# (preferred RPC port, default 9000; a free one is picked when it is taken),
# BACKFILL_HDFS_TIMEOUT (seconds to wait for readiness, default 60).
# Every address is 127.0.0.1; the NameNode's HTTP port is a free one picked here (for
# fsck), the DataNode's ports are chosen by the kernel (port 0).
set -euo pipefail
# shellcheck source=lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
# shellcheck source=lib/hadoop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/hadoop.sh"
SERVER_STATE="$HDFS_STATE"  # named by fail_start (lib/common.sh)

NN_LOG="$HDFS_STATE/logs/namenode.log"
DN_LOG="$HDFS_STATE/logs/datanode.log"
MARKER="-Dbackfill.hdfs=$HDFS_STATE"

usage() { die "usage: $0 start|stop|status|env|datanode-stop|datanode-start"; }

write_conf() {
    local port="$1" http_port="$2"
    mkdir -p "$HDFS_CONF" "$HDFS_STATE/webroot/webapps/hdfs" "$HDFS_STATE/webroot/webapps/datanode" \
        "$HDFS_STATE/webroot/webapps/secondary" "$HDFS_STATE/logs"
    cat >"$HDFS_CONF/core-site.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/hdfs.sh for the test HDFS; also the client conf (HADOOP_CONF_DIR). -->
<configuration>
  <property><name>fs.defaultFS</name><value>hdfs://127.0.0.1:$port</value></property>
  <property><name>hadoop.tmp.dir</name><value>$HDFS_STATE/tmp</value></property>
  <!-- Writable only: the default list adds Avro serializations whose jars are not shipped. -->
  <property><name>io.serializations</name><value>org.apache.hadoop.io.serializer.WritableSerialization</value></property>
  <!-- No libhadoop.so: never the JNI group mapping. -->
  <property><name>hadoop.security.group.mapping</name><value>org.apache.hadoop.security.ShellBasedUnixGroupsMapping</value></property>
</configuration>
EOF
    cat >"$HDFS_CONF/hdfs-site.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/hdfs.sh: loopback only, one replica, 1 MiB blocks, no web HDFS. -->
<configuration>
  <property><name>dfs.namenode.rpc-address</name><value>127.0.0.1:$port</value></property>
  <!-- A known port (not 0): fsck and other admin tools reach the NameNode over HTTP. -->
  <property><name>dfs.namenode.http-address</name><value>127.0.0.1:$http_port</value></property>
  <property><name>dfs.namenode.secondary.http-address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.http.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.ipc.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.hostname</name><value>127.0.0.1</value></property>
  <property><name>dfs.namenode.name.dir</name><value>file://$HDFS_STATE/name</value></property>
  <property><name>dfs.datanode.data.dir</name><value>file://$HDFS_STATE/data</value></property>
  <property><name>dfs.webhdfs.enabled</name><value>false</value></property>
  <property><name>dfs.replication</name><value>1</value></property>
  <property><name>dfs.blocksize</name><value>1048576</value></property>
  <property><name>dfs.namenode.safemode.extension</name><value>0</value></property>
  <property><name>dfs.namenode.datanode.registration.ip-hostname-check</name><value>false</value></property>
  <property><name>dfs.permissions.enabled</name><value>false</value></property>
  <!-- The DataNode reports at once instead of after a random delay. -->
  <property><name>dfs.blockreport.initialDelay</name><value>0</value></property>
  <property><name>dfs.heartbeat.interval</name><value>1</value></property>
</configuration>
EOF
    cp "$BACKFILL_SCRIPTS/conf/log4j-daemon.properties" "$HDFS_CONF/log4j.properties"
}

# daemon_cmd CLASS ARGS...: set the array CMD to one daemon's java command line.
daemon_cmd() {
    local cls="$1"; shift
    CMD=("$JAVA_HOME_HDFS/bin/java" -Xmx256m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true "$MARKER" \
        -Dlog4j.configuration="file:$HDFS_CONF/log4j.properties" \
        -Dhadoop.log.dir="$HDFS_STATE/logs" \
        -cp "$HDFS_CONF:$HDFS_STATE/webroot:$HADOOP_JARS/*" "$cls" "$@")
}

# print_env: the env lines, on fd 3 only (start and env run under env_stdout_only).
print_env() {
    emit_env BACKFILL_TEST_HDFS "hdfs://127.0.0.1:$(cat "$HDFS_STATE/port")" \
        HADOOP_CONF_DIR "$HDFS_CONF"
}

cmd_start() {
    JAVA_HOME_HDFS="$(java_home)"
    if hdfs_running; then
        log "hdfs: already running on port $(cat "$HDFS_STATE/port") (state $HDFS_STATE)"
        print_env
        return 0
    fi
    cmd_stop 2>/dev/null || true # half-started leftovers
    ensure_hadoop_jars
    local t0 port
    t0="$(now_ms)"
    rm -rf "$HDFS_STATE"
    mkdir -p "$HDFS_STATE"
    port="$(free_port "${BACKFILL_HDFS_PORT:-9000}")"
    echo "$port" >"$HDFS_STATE/port"
    local http_port
    http_port="$(free_port)"
    [ "$http_port" != "$port" ] || http_port="$(free_port)"
    write_conf "$port" "$http_port"

    log "hdfs: formatting a fresh NameNode in $HDFS_STATE/name"
    daemon_cmd org.apache.hadoop.hdfs.server.namenode.NameNode -format -force -nonInteractive
    "${CMD[@]}" >"$HDFS_STATE/logs/format.log" 2>&1 \
        || die_with_logs "hdfs: NameNode -format failed" "$HDFS_STATE/logs/format.log"

    daemon_cmd org.apache.hadoop.hdfs.server.namenode.NameNode
    spawn_daemon "$NN_LOG" "${CMD[@]}" >"$HDFS_STATE/namenode.pid"
    spawn_datanode
    log "hdfs: NameNode pid $(cat "$HDFS_STATE/namenode.pid"), DataNode pid $(cat "$HDFS_STATE/datanode.pid"), RPC 127.0.0.1:$port; waiting for the first block report"

    local timeout="${BACKFILL_HDFS_TIMEOUT:-60}" deadline
    deadline=$(($(date +%s) + timeout))
    while ! grep -q "Successfully sent block report" "$DN_LOG" 2>/dev/null; do
        if ! pid_alive "$(cat "$HDFS_STATE/namenode.pid")"; then
            fail_start "hdfs: the NameNode exited during start-up" "$NN_LOG" "$DN_LOG"
        fi
        if ! pid_alive "$(cat "$HDFS_STATE/datanode.pid")"; then
            fail_start "hdfs: the DataNode exited during start-up" "$DN_LOG" "$NN_LOG"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            fail_start "hdfs: no 'Successfully sent block report' in $DN_LOG within ${timeout}s (BACKFILL_HDFS_TIMEOUT)" "$DN_LOG" "$NN_LOG"
        fi
        sleep 0.2
    done
    log "hdfs: ready at hdfs://127.0.0.1:$port in $(( $(now_ms) - t0 )) ms (logs in $HDFS_STATE/logs)"
    print_env
}

spawn_datanode() {
    daemon_cmd org.apache.hadoop.hdfs.server.datanode.DataNode
    spawn_daemon "$DN_LOG" "${CMD[@]}" >"$HDFS_STATE/datanode.pid"
}

cmd_datanode_stop() {
    # A fault test that stops nothing would prove nothing: not running is an error.
    pid_matches "$(cat "$HDFS_STATE/datanode.pid" 2>/dev/null || true)" "$MARKER" \
        || die "hdfs: no DataNode running (state $HDFS_STATE); is BACKFILL_STATE the one the server was started with?"
    stop_pid "hdfs datanode" "$HDFS_STATE/datanode.pid" "$MARKER" 30
}

# Same data dir, new ports (they are 0): the NameNode learns them from the new
# registration, so clients must ask it again where the blocks are.
cmd_datanode_start() {
    JAVA_HOME_HDFS="$(java_home)"
    local nn t0
    nn="$(cat "$HDFS_STATE/namenode.pid" 2>/dev/null || true)"
    pid_matches "$nn" "$MARKER" || die "hdfs: the NameNode is not running (state $HDFS_STATE)"
    if pid_matches "$(cat "$HDFS_STATE/datanode.pid" 2>/dev/null || true)" "$MARKER"; then
        log "hdfs: DataNode already running"
        return 0
    fi
    t0="$(now_ms)"
    spawn_datanode
    local timeout="${BACKFILL_HDFS_TIMEOUT:-60}" deadline
    deadline=$(($(date +%s) + timeout))
    while ! grep -q "Successfully sent block report" "$DN_LOG" 2>/dev/null; do
        pid_alive "$(cat "$HDFS_STATE/datanode.pid")" || die_with_logs "hdfs: the DataNode exited during start-up" "$DN_LOG"
        [ "$(date +%s)" -lt "$deadline" ] || die_with_logs "hdfs: DataNode not ready within ${timeout}s" "$DN_LOG"
        sleep 0.2
    done
    log "hdfs: DataNode pid $(cat "$HDFS_STATE/datanode.pid") ready in $(( $(now_ms) - t0 )) ms"
}

cmd_stop() {
    local t0
    t0="$(now_ms)"
    stop_pid "hdfs datanode" "$HDFS_STATE/datanode.pid" "$MARKER" 30
    stop_pid "hdfs namenode" "$HDFS_STATE/namenode.pid" "$MARKER" 30
    log "hdfs: stop took $(( $(now_ms) - t0 )) ms"
}

cmd_status() {
    if hdfs_running; then
        local nn dn
        nn="$(cat "$HDFS_STATE/namenode.pid")"; dn="$(cat "$HDFS_STATE/datanode.pid")"
        echo "hdfs: running at hdfs://127.0.0.1:$(cat "$HDFS_STATE/port"); namenode pid $nn (RSS $(rss_kb "$nn") KiB), datanode pid $dn (RSS $(rss_kb "$dn") KiB); state $HDFS_STATE"
        return 0
    fi
    echo "hdfs: not running (state $HDFS_STATE)"
    return 3
}

cmd_env() {
    hdfs_running || die "hdfs: not running (state $HDFS_STATE); start it with scripts/hdfs.sh start"
    print_env
}

# start and env: callers source stdout, so only print_env may write there (fd 3);
# everything else (venv creation, the pyspark download, logs) goes to stderr.
case "${1:-}" in
    start) env_stdout_only; cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) env_stdout_only; cmd_env ;;
    datanode-stop) cmd_datanode_stop ;;
    datanode-start) cmd_datanode_start ;;
    *) usage ;;
esac
