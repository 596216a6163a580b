#!/usr/bin/env bash
# Regenerate tests/data/hadoop/: records.tsv (scripts/gen_hadoop_records.py) and the
# nine SequenceFiles seq-{none,record,block}-{default,gzip,bzip2}.seq written from it
# by Hadoop 2.7.3's own SequenceFile.Writer (scripts/write-seqfile.sh), then check
# every file with Hadoop's own reader: same records, same bytes, same order, and
# that FsShell -text decodes it. Needs no running server; gzip needs gcc (zlib shim).
#
#   scripts/make-hadoop-fixtures.sh [OUTDIR]    (default tests/data/hadoop)
#
# records.tsv is deterministic; the .seq files are not byte-stable across runs
# (each SequenceFile header carries a random 16-byte sync marker), only their records.
set -euo pipefail
# shellcheck source=lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
# shellcheck source=lib/hadoop.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/hadoop.sh"

out="${1:-$BACKFILL_REPO/tests/data/hadoop}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Never the running test HDFS: these are local files.
export HADOOP_CONF_DIR="$HADOOP_LOCAL_CONF"
max_bytes=$((1100 * 1024))

log "records: $out/records.tsv"
"$(python_bin)" "$BACKFILL_SCRIPTS/gen_hadoop_records.py" 300 >"$out/records.tsv.tmp"
mv "$out/records.tsv.tmp" "$out/records.tsv"
n_expected="$(wc -l <"$out/records.tsv" | tr -d ' ')"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for type in none record block; do
    for codec in default gzip bzip2; do
        f="$out/seq-$type-$codec.seq"
        BACKFILL_SEQ_BLOCKSIZE=4096 "$BACKFILL_SCRIPTS/write-seqfile.sh" "$out/records.tsv" "$f" \
            "$(echo "$type" | tr a-z A-Z)" "$codec" \
            || die "writing $f failed (see above)"
        hadoop_java ReadSeqFile "$f" >"$tmp/back.tsv" 2>"$tmp/read.err" \
            || die_with_logs "Hadoop's reader could not read $f" "$tmp/read.err"
        cmp -s "$tmp/back.tsv" "$out/records.tsv" \
            || die "$f read back differs from records.tsv ($(wc -l <"$tmp/back.tsv") of $n_expected records; diff: cmp $tmp/back.tsv $out/records.tsv)"
        hadoop_java org.apache.hadoop.fs.FsShell -text "file://$f" >"$tmp/text.out" 2>"$tmp/text.err" \
            || die_with_logs "FsShell -text $f failed" "$tmp/text.err"
        size="$(wc -c <"$f" | tr -d ' ')"
        [ "$size" -le "$max_bytes" ] || die "$f is $size bytes, over the $max_bytes budget for test data"
        log "ok: $(basename "$f"): $n_expected records read back byte-exact, $size bytes, $(grep -o 'compression=.*' "$tmp/read.err")"
    done
done
rm -f "$out"/.*.crc
log "done: $out"
