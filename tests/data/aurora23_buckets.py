#!/usr/bin/env python3
"""Write aurora23_buckets.json: the bucket lower bounds of every definition in
mappings/histograms/Histograms.FIREFOX_AURORA_23_BASE.json, computed with the
formulas of SPEC section 4 (the old histogram_tools.py, math.log / math.exp).
Run from the repository root: python3 tests/data/aurora23_buckets.py"""
import collections
import json
import math

SRC = "mappings/histograms/Histograms.FIREFOX_AURORA_23_BASE.json"
CONSTANTS = {
    "JS::gcreason::NUM_TELEMETRY_REASONS": "101",
    "mozilla::StartupTimeline::MAX_EVENT_ID": "12",
}


def value(v):
    if isinstance(v, int):
        return v
    for name, repl in CONSTANTS.items():
        v = v.replace(name, repl)
    return eval(v, {})


def linear(low, high, n):
    out = [0] * n
    for i in range(1, n):
        out[i] = int(math.floor((low * (n - 1 - i) + high * (i - 1)) / float(n - 2) + 0.5))
    return out


def exponential(low, high, n):
    out = [0] * n
    cur = low
    out[1] = cur
    log_max = math.log(high)
    for i in range(2, n):
        log_cur = math.log(cur)
        nxt = int(math.floor(math.exp(log_cur + (log_max - log_cur) / (n - i)) + 0.5))
        cur = nxt if nxt > cur else cur + 1
        out[i] = cur
    return out


defs = json.load(open(SRC), object_pairs_hook=collections.OrderedDict)
result = collections.OrderedDict()
for name, d in defs.items():
    kind = d["kind"]
    if kind in ("boolean", "flag"):
        result[name] = linear(1, 2, 3)
    elif kind == "enumerated":
        nv = value(d["n_values"])
        result[name] = linear(1, nv, nv + 1)
    else:
        f = linear if kind == "linear" else exponential
        result[name] = f(value(d.get("low", 1)), value(d["high"]), value(d["n_buckets"]))

out = collections.OrderedDict()
out["source"] = SRC
out["generator"] = "tests/data/aurora23_buckets.py"
out["buckets"] = result
with open("tests/data/aurora23_buckets.json", "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
