#!/usr/bin/env python3
"""Writes N gzipped classic payloads of about 8.2 KB each (the old benchmark's size)
into OUT_DIR/payload-NNN.gz, deterministic for a seed."""
import gzip, json, random, sys, os

out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
os.makedirs(out, exist_ok=True)
for i in range(n):
    rnd = random.Random(i)
    hist, body = {}, b""
    k = 0
    while len(body) < 8200:
        for _ in range(8):
            values = {str(b): rnd.randint(0, 5000) for b in sorted(rnd.sample(range(0, 1000), 12))}
            hist[f"HISTOGRAM_{k}"] = {"range": [1, 1000], "bucket_count": 20, "histogram_type": 0,
                                      "values": values, "sum": rnd.randint(0, 10**6)}
            k += 1
        doc = {"ver": 1, "info": {"reason": "saved-session", "appName": "Firefox",
               "appVersion": "22.0a1", "appUpdateChannel": "nightly", "appBuildID": "20130226031002",
               "revision": "http://hg.mozilla.org/mozilla-central/rev/a55c55edf302"},
               "simpleMeasurements": {"uptime": rnd.randint(1, 9999)}, "histograms": hist}
        body = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)
    with open(os.path.join(out, f"payload-{i:03}.gz"), "wb") as f:
        f.write(body)
