#!/usr/bin/env bash
# Exercise every test-infrastructure script end to end and print timings and memory.
#
#   scripts/selftest.sh            with the current cache
#   BACKFILL_CACHE=$(mktemp -d) scripts/selftest.sh    from an empty cache
#
# Uses its own state dir ($BACKFILL_STATE/selftest-<pid>) and stops what it started.
# Exits non-zero on the first failed check, saying which.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"
export BACKFILL_STATE="$BACKFILL_STATE/selftest-$$"
mkdir -p "$BACKFILL_STATE"
work="$BACKFILL_STATE/work"
mkdir -p "$work"

cleanup() {
    "$here/s3.sh" stop >/dev/null 2>&1 || true
    "$here/sqs.sh" stop >/dev/null 2>&1 || true
    "$here/hdfs.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

pass=0
ok() { pass=$((pass + 1)); log "ok: $*"; }
fail() { die "FAILED: $*"; }
timed() { # timed VAR CMD...: run CMD, store wall ms in VAR
    local __var="$1"; shift
    local t0; t0="$(now_ms)"
    "$@"
    printf -v "$__var" '%s' "$(( $(now_ms) - t0 ))"
}

# 1. Cache
timed t_cache "$here/lib/cache.sh" all || fail "cache.sh all"
ok "cache.sh all in ${t_cache} ms ($(du -sh "$BACKFILL_CACHE" | cut -f1) in $BACKFILL_CACHE)"

# 2. HDFS
timed t_hdfs_start "$here/hdfs.sh" start >"$work/hdfs.env" || fail "hdfs.sh start"
grep -q '^export BACKFILL_TEST_HDFS=hdfs://127.0.0.1:[0-9]*$' "$work/hdfs.env" || fail "hdfs.sh start printed no BACKFILL_TEST_HDFS"
"$here/hdfs.sh" env | cmp -s - "$work/hdfs.env" || fail "hdfs.sh env differs from what start printed"
# shellcheck disable=SC1090,SC1091
. "$work/hdfs.env"
"$here/hdfs.sh" status || fail "hdfs.sh status while running"
nn_rss="$(rss_kb "$(cat "$BACKFILL_STATE/hdfs/namenode.pid")")"
dn_rss="$(rss_kb "$(cat "$BACKFILL_STATE/hdfs/datanode.pid")")"
ok "hdfs up at $BACKFILL_TEST_HDFS in ${t_hdfs_start} ms; RSS namenode ${nn_rss} KiB, datanode ${dn_rss} KiB"

"$here/hadoop-tool.sh" fs -mkdir -p /data/telemetry/2013/10/01 || fail "FsShell -mkdir"
head -c 3500000 /dev/urandom >"$work/3.5MB.bin"
"$here/hadoop-tool.sh" fs -put "$work/3.5MB.bin" /data/big.bin || fail "FsShell -put"
"$here/hadoop-tool.sh" fs -get /data/big.bin "$work/big.back" || fail "FsShell -get"
cmp -s "$work/3.5MB.bin" "$work/big.back" || fail "a 3.5 MB file did not come back from HDFS unchanged"
blocks="$("$here/hadoop-tool.sh" org.apache.hadoop.hdfs.tools.DFSck /data/big.bin -files -blocks 2>/dev/null | grep -c 'blk_' || true)"
[ "$blocks" = 4 ] || fail "a 3.5 MB file should span 4 blocks of 1 MiB, fsck listed $blocks"
ok "FsShell -put/-get round trip of 3.5 MB; $blocks blocks of 1 MiB"

fixtures="$BACKFILL_REPO/tests/data/hadoop"
i=0
for codec in default gzip bzip2; do
    dst="/data/telemetry/2013/10/01/part-m-0000$i"; i=$((i + 1))
    "$here/write-seqfile.sh" "$fixtures/records.tsv" "$BACKFILL_TEST_HDFS$dst" BLOCK "$codec" 2>"$work/w.err" \
        || { cat "$work/w.err" >&2; fail "write-seqfile.sh into HDFS ($codec)"; }
    "$here/hadoop-tool.sh" ReadSeqFile "$dst" 2>/dev/null | cmp -s - "$fixtures/records.tsv" \
        || fail "SequenceFile $dst written into HDFS does not read back as records.tsv"
done
"$here/hadoop-tool.sh" fs -put "$fixtures/seq-record-gzip.seq" /data/part-r-00000 || fail "put fixture"
"$here/hadoop-tool.sh" fs -text /data/part-r-00000 >/dev/null || fail "FsShell -text of a gzip SequenceFile in HDFS"
ok "SequenceFiles written straight into HDFS (BLOCK x default/gzip/bzip2) read back byte-exact; -text decodes"
"$here/hadoop-tool.sh" fs -ls -R /data >&2

timed t_hdfs_stop "$here/hdfs.sh" stop || fail "hdfs.sh stop"
"$here/hdfs.sh" stop || fail "second hdfs.sh stop"
set +e; "$here/hdfs.sh" status; st=$?; set -e
[ "$st" = 3 ] || fail "hdfs.sh status after stop should exit 3, got $st"
ok "hdfs stopped in ${t_hdfs_stop} ms; a second stop is harmless; status says 3"

# 3. S3
timed t_s3_start "$here/s3.sh" start >"$work/s3.env" || fail "s3.sh start"
for v in BACKFILL_TEST_S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION; do
    grep -q "^export $v=" "$work/s3.env" || fail "s3.sh start printed no $v"
done
"$here/s3.sh" env | cmp -s - "$work/s3.env" || fail "s3.sh env differs from what start printed"
# shellcheck disable=SC1090,SC1091
. "$work/s3.env"
"$here/s3.sh" status || fail "s3.sh status while running"
python3 "$here/lib/s3probe.py" "$BACKFILL_TEST_S3_ENDPOINT" "$AWS_ACCESS_KEY_ID" wrong-secret 2>/dev/null \
    && fail "S3 accepted a request signed with a wrong secret"
weed_rss="$(rss_kb "$(cat "$BACKFILL_STATE/s3/weed.pid")")"
ok "s3 up at $BACKFILL_TEST_S3_ENDPOINT in ${t_s3_start} ms; RSS weed ${weed_rss} KiB; bad signatures refused"
timed t_s3_stop "$here/s3.sh" stop || fail "s3.sh stop"
"$here/s3.sh" stop || fail "second s3.sh stop"
set +e; "$here/s3.sh" status; st=$?; set -e
[ "$st" = 3 ] || fail "s3.sh status after stop should exit 3, got $st"
ok "s3 stopped in ${t_s3_stop} ms; a second stop is harmless; status says 3"

# 3b. SQS (moto)
timed t_sqs_start "$here/sqs.sh" start >"$work/sqs.env" || fail "sqs.sh start"
grep -qx "export BACKFILL_TEST_SQS_ENDPOINT=http://127.0.0.1:[0-9]*" "$work/sqs.env" \
    || fail "sqs.sh start printed something other than the BACKFILL_TEST_SQS_ENDPOINT line"
"$here/sqs.sh" env | cmp -s - "$work/sqs.env" || fail "sqs.sh env differs from what start printed"
"$here/sqs.sh" status || fail "sqs.sh status while running"
moto_rss="$(rss_kb "$(cat "$BACKFILL_STATE/sqs/moto.pid")")"
ok "sqs up in ${t_sqs_start} ms; RSS moto ${moto_rss} KiB"
timed t_sqs_stop "$here/sqs.sh" stop || fail "sqs.sh stop"
"$here/sqs.sh" stop || fail "second sqs.sh stop"
set +e; "$here/sqs.sh" status; st=$?; set -e
[ "$st" = 3 ] || fail "sqs.sh status after stop should exit 3, got $st"
ok "sqs stopped in ${t_sqs_stop} ms; a second stop is harmless; status says 3"

# 4. test-servers.sh
timed t_ts "$here/test-servers.sh" -- bash -c '[ -n "$BACKFILL_TEST_HDFS" ] && [ -n "$BACKFILL_TEST_S3_ENDPOINT" ] && [ -n "$HADOOP_CONF_DIR" ] && [ "$AWS_REGION" = us-east-1 ] && [ -n "$BACKFILL_TEST_SQS_ENDPOINT" ]' \
    || fail "test-servers.sh with a passing command"
set +e; "$here/test-servers.sh" --s3 -- bash -c 'exit 7' 2>/dev/null; st=$?; set -e
[ "$st" = 7 ] || fail "test-servers.sh should exit with the command's status 7, got $st"
left="$(pids_with "$BACKFILL_STATE/run-" | grep -vx "$$" || true)"
[ -z "$left" ] || fail "test-servers.sh left processes running: $left"
ok "test-servers.sh: start all three + run + stop in ${t_ts} ms; passes a failing status (7) through; nothing left running"

# 5. Fixtures regenerate (records deterministic)
"$here/make-hadoop-fixtures.sh" "$work/fixtures" 2>"$work/fix.err" || { cat "$work/fix.err" >&2; fail "make-hadoop-fixtures.sh"; }
cmp -s "$work/fixtures/records.tsv" "$fixtures/records.tsv" || fail "records.tsv is not reproducible"
ok "make-hadoop-fixtures.sh regenerated 9 SequenceFiles, each verified; records.tsv identical to the committed one"

rm -rf "$BACKFILL_STATE"
echo "selftest: cache ${t_cache} ms; hdfs start ${t_hdfs_start} ms, stop ${t_hdfs_stop} ms, RSS nn ${nn_rss} KiB dn ${dn_rss} KiB; s3 start ${t_s3_start} ms, stop ${t_s3_stop} ms, RSS ${weed_rss} KiB; sqs start ${t_sqs_start} ms, stop ${t_sqs_stop} ms, RSS ${moto_rss} KiB; test-servers round ${t_ts} ms"
echo "selftest: $pass passed, 0 failed"
