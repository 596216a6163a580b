#!/usr/bin/env bash
# Write a SequenceFile of (Text, Text) with Hadoop 2.7.3's own SequenceFile.Writer
# (scripts/java/WriteSeqFile.java) from lines "hex(key)<TAB>hex(value)".
#
#   scripts/write-seqfile.sh INPUT.tsv OUTPUT [NONE|RECORD|BLOCK] [default|gzip|bzip2]
#
# OUTPUT: a local path (written without .crc files), file:///..., or hdfs://... /
# hdfs:/path (straight into the running test HDFS, see scripts/hdfs.sh).
# Env: BACKFILL_SEQ_BLOCKSIZE (io.seqfile.compress.blocksize, default 4096).
#
# gzip with RECORD/BLOCK needs native zlib in Hadoop 2.7.3: a small JNI shim
# (scripts/java/native) is built with gcc and loaded. That JVM must not write to HDFS
# (Hadoop would then look for native CRC code too), so gzip files bound for HDFS are
# written to a local temp file first and copied in with FsShell -put.
set -euo pipefail
# shellcheck source=lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
# shellcheck source=lib/hadoop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/hadoop.sh"

[ $# -ge 2 ] && [ $# -le 4 ] || die "usage: $0 INPUT.tsv OUTPUT [NONE|RECORD|BLOCK] [default|gzip|bzip2]"
input="$1" output="$2" type="${3:-NONE}" codec="${4:-default}"
type="$(echo "$type" | tr a-z A-Z)"; codec="$(echo "$codec" | tr A-Z a-z)"
[ -f "$input" ] || die "input $input does not exist"
case "$type" in NONE|RECORD|BLOCK) ;; *) die "compression type must be NONE, RECORD or BLOCK, not '$type'" ;; esac
case "$codec" in default|gzip|bzip2) ;; *) die "codec must be default, gzip or bzip2, not '$codec'" ;; esac
blk=(-Dbackfill.blocksize="${BACKFILL_SEQ_BLOCKSIZE:-4096}")

case "$output" in
    hdfs:*) to_hdfs=1 ;;
    file:*) to_hdfs=0 ;;
    *) to_hdfs=0; output="file://$(cd "$(dirname "$output")" && pwd)/$(basename "$output")" ;;
esac

if [ "$codec" = gzip ] && [ "$type" != NONE ]; then
    native="$(ensure_hadoop_native)"
    if [ "$to_hdfs" = 1 ]; then
        hdfs_running || [ -n "${HADOOP_CONF_DIR:-}" ] || die "output $output is on HDFS but the test HDFS is not running (scripts/hdfs.sh start)"
        tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
        HADOOP_CONF_DIR="$HADOOP_LOCAL_CONF" hadoop_java --native "$native" "${blk[@]}" WriteSeqFile "$input" "file://$tmp/out.seq" "$type" "$codec"
        hadoop_java org.apache.hadoop.fs.FsShell -put -f "$tmp/out.seq" "$output"
    else
        HADOOP_CONF_DIR="$HADOOP_LOCAL_CONF" hadoop_java --native "$native" "${blk[@]}" WriteSeqFile "$input" "$output" "$type" "$codec"
    fi
else
    if [ "$to_hdfs" = 1 ]; then
        hdfs_running || [ -n "${HADOOP_CONF_DIR:-}" ] || die "output $output is on HDFS but the test HDFS is not running (scripts/hdfs.sh start)"
    fi
    hadoop_java "${blk[@]}" WriteSeqFile "$input" "$output" "$type" "$codec"
fi
