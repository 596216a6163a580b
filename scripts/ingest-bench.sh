#!/usr/bin/env bash
# Load benchmark of `ingest serve` on loopback, as the old node.js server was
# measured (BENCHMARKS.md): wrk, 64 keep-alive connections, POSTs of ~8.2 KB
# gzipped classic payloads cycling through 100 different bodies. Runs once
# without and once with --fsync and prints requests/s and p50/p99 latency.
# wrk and the server share the machine's cores: the figures include that.
#   scripts/ingest-bench.sh            # 15 s per run
#   DURATION=30s scripts/ingest-bench.sh
# The spool goes to target/ingest-bench (a real disk; removed after each run), or
# to $BENCH_SPOOL (e.g. /dev/shm/x, to take the disk out of the measurement).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration=${DURATION:-15s}
connections=${CONNECTIONS:-64}
threads=${THREADS:-2}

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else
        echo "ingest-bench: wrk is not installed (Debian package 'wrk'; run as root to install it)" >&2
        exit 1
    fi
fi
cargo build --release --locked -p ingest
work=$(mktemp -d)
spool=${BENCH_SPOOL:-target/ingest-bench}
trap 'rm -rf "$work" "$spool"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
python3 ingest/bench/payloads.py "$work/payloads" 100

for mode in "" "--fsync"; do
    rm -rf "$spool"
    target/release/ingest serve --listen 127.0.0.1:0 --spool "$spool" --writer-id bench \
        --min-free-disk 0 $mode 2>"$work/server.log" &
    pid=$!
    for _ in $(seq 100); do
        grep -q 'listening on' "$work/server.log" && break
        sleep 0.1
    done
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/server.log")
    [ -n "$addr" ] || { cat "$work/server.log" >&2; exit 1; }
    result=$(PAYLOAD_DIR="$work/payloads" wrk -t"$threads" -c"$connections" -d"$duration" \
        --latency -s ingest/bench/submit.lua "http://$addr" | grep RESULT)
    kill -TERM "$pid"
    wait "$pid"
    pid=
    files=$(ls "$spool/ready" | wc -l)
    bytes=$(du -sb "$spool/ready" | cut -f1)
    echo "ingest serve ${mode:-(no --fsync)}: $result; spool: $files files, $bytes bytes"
    if [ -z "$mode" ]; then
        # What a worker pays per record: one of the raw logs just written, published
        # by `ingest work --jobs 1` into a local DEST.
        first=$(ls "$spool/ready" | head -1)
        mkdir -p "$work/wspool/ready"
        mv "$spool/ready/$first" "$work/wspool/ready/"
        /usr/bin/time -f '%e %U %S %M' -o "$work/work.time" target/release/ingest work \
            --spool "$work/wspool" "$work/dest" --once --jobs 1 --report "$work/work.json" 2>/dev/null
        read -r wall user sys rss < "$work/work.time"
        python3 - "$work/work.json" "$wall" "$user" "$sys" "$rss" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wall, user, sys_, rss = map(float, sys.argv[2:])
cpu = user + sys_
n = r["records_in"]
mb = sum(f["bytes_in"] for f in r["files"]) / 1e6
print(f"ingest work --jobs 1 on one raw log ({mb:.0f} MB, {n} records, {r['records_out']} written): "
      f"{cpu:.2f} CPU s, {cpu / n * 1e6:.0f} us of CPU per record, {n / cpu:.0f} records/s per core, "
      f"peak RSS {rss / 1024:.0f} MiB")
PY
    fi
done
