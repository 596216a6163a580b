#!/usr/bin/env bash
# The first run as a new machine meets it: scripts/test-servers.sh with an EMPTY
# cache, so the venv, SeaweedFS, moto and the Hadoop jars are all fetched on the way,
# then a check that the env is exported and every server answers.
#
#   scripts/cold-start-check.sh
#
# Cache: a new temporary BACKFILL_CACHE under $TMPDIR (default /tmp; ~500 MB, moto's
# dependencies ~290 MB of it, plus the 220 MB pyspark archive while it is extracted),
# and a temporary pip cache, both removed on exit, pass or fail. Server state:
# $BACKFILL_STATE/cold-<pid> (default /tmp/backfill-test), removed after a pass, kept
# with its logs after a failure. Downloads ~325 MB from PyPI (moto and its
# dependencies ~53 MB of it). Prints the cold start's wall time and the bytes
# downloaded; exits non-zero on any failure. scripts/test.sh runs it when CI=true
# or BACKFILL_COLD_CHECK=1. Exists because selftest.sh warms the cache with
# `cache.sh all` before starting servers, so it never saw installer output leak
# into the env that test-servers.sh sources (issue 10 §0).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

# --check DIR: the command test-servers.sh runs, with the servers up.
if [ "${1:-}" = --check ]; then
    dir="$2"
    now_ms >"$dir/servers-up-ms"
    [ "$BACKFILL_CACHE" = "$dir/cache" ] || die "check: BACKFILL_CACHE is $BACKFILL_CACHE, not the temporary $dir/cache"
    for v in BACKFILL_TEST_HDFS BACKFILL_TEST_S3_ENDPOINT HADOOP_CONF_DIR AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION \
        BACKFILL_TEST_SQS_ENDPOINT; do
        [ -n "${!v:-}" ] || die "check: $v is not set by test-servers.sh"
    done
    [ -f "$HADOOP_CONF_DIR/core-site.xml" ] || die "check: HADOOP_CONF_DIR=$HADOOP_CONF_DIR has no core-site.xml"
    nn_port="${BACKFILL_TEST_HDFS##*:}" s3_port="${BACKFILL_TEST_S3_ENDPOINT##*:}" sqs_port="${BACKFILL_TEST_SQS_ENDPOINT##*:}"
    port_answers "$nn_port" || die "check: the NameNode port $nn_port ($BACKFILL_TEST_HDFS) refuses connections"
    port_answers "$s3_port" || die "check: the S3 port $s3_port ($BACKFILL_TEST_S3_ENDPOINT) refuses connections"
    port_answers "$sqs_port" || die "check: the SQS port $sqs_port ($BACKFILL_TEST_SQS_ENDPOINT) refuses connections"
    "$here/hdfs.sh" status >&2 || die "check: hdfs.sh status says HDFS is not running"
    "$here/s3.sh" status >&2 || die "check: s3.sh status: no signed S3 round trip"
    "$here/sqs.sh" status >&2 || die "check: sqs.sh status: no signed SQS round trip"
    # A real HDFS client call (also compiles the Java helpers, cold).
    "$here/hadoop-tool.sh" fs -mkdir -p /cold-start-check >&2 || die "check: FsShell -mkdir on $BACKFILL_TEST_HDFS failed"
    "$here/hadoop-tool.sh" fs -ls / 2>/dev/null | grep -q ' /cold-start-check$' \
        || die "check: FsShell -ls / on $BACKFILL_TEST_HDFS does not list /cold-start-check"
    log "check: env set; NameNode :$nn_port, S3 :$s3_port and SQS :$sqs_port answer; hdfs/s3/sqs status ok; HDFS mkdir + ls ok"
    exit 0
fi
[ $# -eq 0 ] || die "usage: $0   (no arguments; see the comment at its top)"

# Bytes received on every interface but lo (this network namespace, all processes).
rx_bytes() {
    awk 'NR > 2 { split($0, a, ":"); gsub(/ /, "", a[1]); if (a[1] != "lo") { split(a[2], f, " "); s += f[1] } }
         END { print s + 0 }' /proc/net/dev 2>/dev/null || echo 0
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/backfill-cold.XXXXXX")"
export BACKFILL_CACHE="$tmp/cache"
export PIP_CACHE_DIR="$tmp/pip-cache" PIP_LOG="$tmp/pip.log"
export BACKFILL_STATE="$BACKFILL_STATE/cold-$$"
child=""
cleanup() {
    local rc=$?
    # A second Ctrl-C must not cut short the servers' stop or the cache removal.
    trap - EXIT
    trap '' INT TERM
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true # test-servers.sh stops the servers
        wait "$child" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    rmdir "$BACKFILL_STATE" 2>/dev/null || true # empty after a pass
    [ "$rc" = 0 ] || log "FAILED (exit $rc); temporary cache $tmp removed; server logs, if any: $BACKFILL_STATE"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

log "cold start: test-servers.sh with an empty BACKFILL_CACHE=$BACKFILL_CACHE (downloads ~325 MB)"
rx0="$(rx_bytes)"
t0="$(now_ms)"
# In the background + wait, so that a signal to this script is handled at once.
"$here/test-servers.sh" -- "$here/cold-start-check.sh" --check "$tmp" &
child=$!
set +e
wait "$child"
status=$?
set -e
child=""
t1="$(now_ms)"
rx1="$(rx_bytes)"
[ "$status" = 0 ] || die "test-servers.sh from an empty cache exited with status $status (see above)"
[ -f "$tmp/servers-up-ms" ] || die "the check command never ran"

up_ms=$(( $(cat "$tmp/servers-up-ms") - t0 ))
pip_files="$(sed -n 's/.*Downloading \([^ ]*\) (\([0-9.]* [kMG]*B\)).*/\1 \2/p' "$tmp/pip.log" 2>/dev/null | sed 's|.*/||' | paste -sd, - | sed 's/,/, /g')"
echo "cold-start-check: PASSED: empty cache to HDFS + S3 + SQS answering in $(secs "$up_ms"); whole run (incl. the check and stopping the servers) $(secs $((t1 - t0)))"
echo "cold-start-check: downloaded $(mb $((rx1 - rx0))) ($((rx1 - rx0)) bytes received on the network during the run, all processes); pip fetched: ${pip_files:-nothing?}"
echo "cold-start-check: cache filled: $(du -sh "$BACKFILL_CACHE" | cut -f1) (removed)"
