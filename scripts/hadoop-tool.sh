#!/usr/bin/env bash
# Run a Hadoop 2.7.3 Java class with the cached jars (and scripts/java helpers) on the
# classpath, e.g.
#   scripts/hadoop-tool.sh org.apache.hadoop.fs.FsShell -put local.seq /data/x.seq
#   scripts/hadoop-tool.sh fs -ls -R /          ("fs" is short for FsShell)
#   scripts/hadoop-tool.sh fs -text /data/x.seq (decodes SequenceFiles)
#   scripts/hadoop-tool.sh ReadSeqFile /data/x.seq   (hex records, see scripts/java)
# Conf (so fs.defaultFS): $HADOOP_CONF_DIR if set, else the running test HDFS's (see
# scripts/hdfs.sh), else a local-only conf (fs.defaultFS file:///, with a note on stderr).
set -euo pipefail
# shellcheck source=lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
# shellcheck source=lib/hadoop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/hadoop.sh"

[ $# -ge 1 ] || die "usage: $0 CLASS|fs ARGS...   (e.g. $0 fs -ls /)"
cls="$1"; shift
[ "$cls" = fs ] && cls=org.apache.hadoop.fs.FsShell
if [ -z "${HADOOP_CONF_DIR:-}" ] && ! hdfs_running; then
    log "note: the test HDFS is not running (scripts/hdfs.sh start); fs.defaultFS is file:///"
fi
hadoop_java "$cls" "$@"
