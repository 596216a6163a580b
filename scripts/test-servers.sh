#!/usr/bin/env bash
# Run a command with the real test servers up, then always stop them.
#
#   scripts/test-servers.sh [--hdfs] [--s3] [--sqs] [--] COMMAND [ARGS...]
#
# Starts the servers asked for (all three when no flag is given) with scripts/hdfs.sh,
# scripts/s3.sh and scripts/sqs.sh, exports their env (BACKFILL_TEST_HDFS,
# HADOOP_CONF_DIR, BACKFILL_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_REGION, BACKFILL_TEST_SQS_ENDPOINT),
# runs COMMAND, stops the servers (on success, failure, Ctrl-C or SIGTERM) and exits
# with COMMAND's status. A server that fails to start makes it exit 1 before COMMAND
# runs, with the server's log tail on stderr.
#
# Each run has its own state dir, $BACKFILL_STATE/run-<pid> (BACKFILL_STATE defaults
# to /tmp/backfill-test), so it never touches servers started by hand; the dir is
# removed after a passing run and kept (logs!) after a failing one.
# Example (.ci/run): scripts/test-servers.sh -- cargo test --all-targets
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

want_hdfs=0 want_s3=0 want_sqs=0
usage="usage: $0 [--hdfs] [--s3] [--sqs] [--] COMMAND [ARGS...]"
while [ $# -gt 0 ]; do
    case "$1" in
        --hdfs) want_hdfs=1; shift ;;
        --s3) want_s3=1; shift ;;
        --sqs) want_sqs=1; shift ;;
        --) shift; break ;;
        -*) die "unknown option $1 ($usage)" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || die "$usage"
if [ $want_hdfs = 0 ] && [ $want_s3 = 0 ] && [ $want_sqs = 0 ]; then want_hdfs=1 want_s3=1 want_sqs=1; fi

export BACKFILL_STATE="$BACKFILL_STATE/run-$$"
mkdir -p "$BACKFILL_STATE"
child=""
status=1

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null || true
    # All at once: SeaweedFS alone can take seconds to stop.
    [ $want_s3 = 1 ] && { "$here/s3.sh" stop || log "s3 stop failed (state $BACKFILL_STATE/s3)"; } &
    [ $want_sqs = 1 ] && { "$here/sqs.sh" stop || log "sqs stop failed (state $BACKFILL_STATE/sqs)"; } &
    [ $want_hdfs = 1 ] && { "$here/hdfs.sh" stop || log "hdfs stop failed (state $BACKFILL_STATE/hdfs)"; }
    wait
    if [ "$status" = 0 ] && [ "$rc" = 0 ]; then
        rm -rf "$BACKFILL_STATE"
    else
        log "server state and logs kept in $BACKFILL_STATE (hdfs/logs, s3/logs, sqs/logs)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; status=130; exit 130' INT
trap 'log "terminated"; status=143; exit 143' TERM

t0="$(now_ms)"
# All at once (each waits on its own readiness); the env each prints goes to a file.
s3_pid="" sqs_pid="" hdfs_ok=1 s3_ok=1 sqs_ok=1
if [ $want_s3 = 1 ]; then
    "$here/s3.sh" start >"$BACKFILL_STATE/s3.env" &
    s3_pid=$!
fi
if [ $want_sqs = 1 ]; then
    "$here/sqs.sh" start >"$BACKFILL_STATE/sqs.env" &
    sqs_pid=$!
fi
if [ $want_hdfs = 1 ]; then
    "$here/hdfs.sh" start >"$BACKFILL_STATE/hdfs.env" || hdfs_ok=0
fi
if [ -n "$s3_pid" ]; then wait "$s3_pid" || s3_ok=0; fi
if [ -n "$sqs_pid" ]; then wait "$sqs_pid" || sqs_ok=0; fi
[ $s3_ok = 1 ] || die "the S3 server (SeaweedFS) did not start; see its log tail above"
[ $sqs_ok = 1 ] || die "the SQS server (moto) did not start; see its log tail above"
[ $hdfs_ok = 1 ] || die "HDFS did not start; see its log tail above"
# source_env FILE VAR...: source what a start command printed, but only after every
# line passed BACKFILL_ENV_LINE_RE (lib/common.sh); anything else (an installer's
# output, a log line) is an error naming the file and line, never shell code to run.
# Then each VAR must be set.
source_env() {
    local f="$1" n=0 line v; shift
    [ -s "$f" ] || die "$f is empty: the start command printed no env lines"
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        [[ "$line" =~ $BACKFILL_ENV_LINE_RE ]] \
            || die "$f line $n is not an env line, refusing to source the file: '${line:0:200}' (only 'export NAME=VALUE' lines may reach a start command's stdout; file kept)"
    done <"$f"
    # shellcheck disable=SC1090
    . "$f"
    for v in "$@"; do
        [ -n "${!v:-}" ] || die "$f did not set $v"
    done
}
if [ $want_s3 = 1 ]; then
    source_env "$BACKFILL_STATE/s3.env" BACKFILL_TEST_S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
fi
if [ $want_hdfs = 1 ]; then
    source_env "$BACKFILL_STATE/hdfs.env" BACKFILL_TEST_HDFS HADOOP_CONF_DIR
fi
if [ $want_sqs = 1 ]; then
    source_env "$BACKFILL_STATE/sqs.env" BACKFILL_TEST_SQS_ENDPOINT
fi
log "servers up in $(( $(now_ms) - t0 )) ms:${BACKFILL_TEST_HDFS:+ hdfs $BACKFILL_TEST_HDFS}${BACKFILL_TEST_S3_ENDPOINT:+ s3 $BACKFILL_TEST_S3_ENDPOINT}${BACKFILL_TEST_SQS_ENDPOINT:+ sqs $BACKFILL_TEST_SQS_ENDPOINT}; running: $*"

# In the background + wait, so that a signal to this script is handled at once.
set +e
"$@" <&0 &
child=$!
wait "$child"
status=$?
child=""
set -e
log "command exited with status $status; stopping servers"
exit "$status"
