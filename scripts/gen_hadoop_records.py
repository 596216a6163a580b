#!/usr/bin/env python3
"""Deterministic records shaped like the legacy Hadoop export (SPEC.md section 1).

Prints one record per line: hex(key) TAB hex(value) -- the input format of
scripts/java/WriteSeqFile.java, and the exact expected content of the SequenceFiles
made from it (hex, because keys hold arbitrary bytes: the salt can be a tab or a
newline, and values hold UTF-8).

key   = salt byte + 8 ASCII bytes yyyyMMdd + 36-char lowercase UUID (45 bytes), where
        salt = int(id[0:2], 16) - 128 as a byte (= first id byte XOR 0x80)
value = compact JSON text shaped like a classic (ver 1) telemetry payload, from a few
        bytes to about 50 KB; some with non-ASCII UTF-8 (up to 4-byte characters);
        exactly one empty value; one document id on two different days.

The payloads have realistic structure but made-up histogram names: they exercise the
readers, not the converter. Same output on every run (fixed seed, no clock).
Usage: gen_hadoop_records.py [COUNT]   (default 300)
"""
import json
import random
import sys
import uuid

SEED = 20131001


def doc_id(rng, prefix=None):
    s = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if prefix:
        s = prefix + s[len(prefix):]
    return s


def row_key(day, did):
    salt = (int(did[0:2], 16) - 128) & 0xFF
    key = bytes([salt]) + day.encode("ascii") + did.encode("ascii")
    assert len(key) == 45, key
    return key


NON_ASCII = [
    "Ünïcødé Äddön", "Сибирь", "日本語のアドオン", "emoji 😀 add-on", "naïve café",
    "Ελληνικά", "עברית", "中文 🚀", "ß€†", "한국어",
]
CHANNELS = ["release", "beta", "aurora", "nightly", "esr"]
REASONS = ["saved-session", "idle-daily", "android-anr-report"]
OSES = [("WINNT", "6.1"), ("Darwin", "12.2.0"), ("Linux", "3.5.0-17-generic"), ("Android", "16")]


def histogram(rng, n_buckets):
    values = {}
    for b in sorted(rng.sample(range(0, 10_000), n_buckets)):
        values[str(b)] = rng.randint(0, 5000)
    h = {
        "range": [1, 10000],
        "bucket_count": 50,
        "histogram_type": rng.choice([0, 1]),
        "values": values,
        "sum": sum(int(k) * v for k, v in values.items()),
    }
    if h["histogram_type"] == 0:
        h["log_sum"] = round(rng.uniform(0, 1e4), 6)
        h["log_sum_squares"] = round(rng.uniform(0, 1e6), 6)
    else:
        h["sum_squares_lo"] = rng.randint(0, 1 << 31)
        h["sum_squares_hi"] = rng.randint(0, 1 << 20)
    return h


def payload(rng, did, day, n_hist, non_ascii):
    os_name, os_ver = rng.choice(OSES)
    version = rng.choice(["16.0", "17.0.1", "18.0", "19.0a2", "20.0a1"])
    p = {
        "ver": 1,
        "info": {
            "reason": rng.choice(REASONS),
            "OS": os_name,
            "appID": "{ec8030f7-c20a-464f-9b0e-13a3a9e97384}",
            "appVersion": version,
            "appName": "Firefox",
            "appBuildID": "2012" + day[4:8] + "%06d" % rng.randint(0, 235959),
            "appUpdateChannel": rng.choice(CHANNELS),
            "platformBuildID": "2012" + day[4:8] + "030203",
            "locale": rng.choice(["en-US", "de", "fr", "ja", "ru"]),
            "cpucount": rng.choice([1, 2, 4, 8]),
            "memsize": rng.choice([2048, 4096, 8192]),
            "arch": rng.choice(["x86", "x86-64"]),
            "version": os_ver,
            "adapterDescription": "Intel(R) HD Graphics",
        },
        "simpleMeasurements": {
            "uptime": rng.randint(1, 10_000),
            "main": rng.randint(10, 900),
            "firstPaint": rng.randint(100, 9000),
            "sessionRestored": rng.randint(100, 9000),
        },
        "histograms": {
            f"TEST_HISTOGRAM_{i}": histogram(rng, rng.randint(1, 12)) for i in range(n_hist)
        },
        "slowSQL": {"mainThread": {}, "otherThreads": {}},
        "chromeHangs": [],
        "lateWrites": {"memoryMap": [], "stacks": []},
        "addonHistograms": {},
    }
    if non_ascii:
        p["info"]["addons"] = ",".join(rng.sample(NON_ASCII, 3)) + "%3A1.0"
        p["info"]["note"] = rng.choice(NON_ASCII)
    return p


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rng = random.Random(SEED)
    days = ["20121005", "20121231", "20130101", "20130617", "20131001", "20131002"]
    # Special records first decided by position, so the file is stable in order.
    special_prefix = {3: "89", 17: "8a", 40: "89", 41: "8a", 123: "00", 124: "ff", 200: "7f", 201: "80"}
    big = {50, 150, 250, 290}          # ~45-50 KB payloads
    tiny = {5, 60, 61, 199}            # a few bytes of JSON
    empty = 100                        # the one empty value
    dup_from, dup_to = 20, 220         # same document id, another day
    ids, ids_day = {}, {}
    out = sys.stdout
    for i in range(count):
        day = days[i * len(days) // count]
        did = doc_id(rng, special_prefix.get(i))
        if i == dup_to:
            did = ids[dup_from]
            day = "20131002" if ids_day[dup_from] != "20131002" else "20131001"
        ids[i] = did
        ids_day[i] = day
        non_ascii = i % 7 == 3
        if i == empty:
            value = b""
        elif i in tiny:
            value = json.dumps(rng.choice([{}, {"ver": 1}, {"ver": 1, "info": {}}, {"x": "é"}]),
                               separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        else:
            n_hist = rng.randint(195, 215) if i in big else rng.randint(0, 3)
            value = json.dumps(payload(rng, did, day, n_hist, non_ascii),
                               separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        out.write(row_key(day, did).hex() + "\t" + value.hex() + "\n")


if __name__ == "__main__":
    main()
