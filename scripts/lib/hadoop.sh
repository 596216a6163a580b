# shellcheck shell=bash
# Running Hadoop 2.7.3 Java classes from the cached jars: the client classpath, the
# test HDFS's state layout, and `hadoop_java` used by hdfs.sh, hadoop-tool.sh and
# write-seqfile.sh. Source after common.sh and cache.sh.

HDFS_STATE="$BACKFILL_STATE/hdfs"
HDFS_CONF="$HDFS_STATE/conf"
HADOOP_LOCAL_CONF="$BACKFILL_SCRIPTS/conf/local"

# hdfs_running: true when both recorded daemons are alive.
hdfs_running() {
    pid_matches "$(cat "$HDFS_STATE/namenode.pid" 2>/dev/null)" "-Dbackfill.hdfs=$HDFS_STATE" &&
        pid_matches "$(cat "$HDFS_STATE/datanode.pid" 2>/dev/null)" "-Dbackfill.hdfs=$HDFS_STATE"
}

# hadoop_client_conf: the conf dir for client tools: $HADOOP_CONF_DIR if set, else the
# running test HDFS's (so fs.defaultFS points at it), else a local-only one.
hadoop_client_conf() {
    if [ -n "${HADOOP_CONF_DIR:-}" ]; then
        [ -f "$HADOOP_CONF_DIR/core-site.xml" ] || die "HADOOP_CONF_DIR=$HADOOP_CONF_DIR has no core-site.xml"
        echo "$HADOOP_CONF_DIR"
    elif hdfs_running; then
        echo "$HDFS_CONF"
    else
        echo "$HADOOP_LOCAL_CONF"
    fi
}

# hadoop_java [--native DIR] CLASS ARGS...: run a class with the Hadoop jars, the
# compiled helpers and the client conf on the classpath (client JVM: quiet logging).
hadoop_java() {
    local libpath=()
    if [ "${1:-}" = "--native" ]; then libpath=("-Djava.library.path=$2"); shift 2; fi
    ensure_hadoop_jars
    local classes conf jh
    jh="$(java_home)"
    classes="$(ensure_java_classes)"
    conf="$(hadoop_client_conf)"
    "$jh/bin/java" -Xmx512m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true \
        -Dlog4j.configuration="file:$BACKFILL_SCRIPTS/conf/log4j-tools.properties" \
        "${libpath[@]}" -cp "$conf:$classes:$HADOOP_JARS/*" "$@"
}
