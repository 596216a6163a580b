#!/usr/bin/env python3
"""Queue workers' scaling: one `backfill work` process against two, on one machine.

  scripts/test-servers.sh --sqs -- scripts/bench-workers.py [--rounds N] [--days D]

For each round: a fresh SQS queue (the test moto), `backfill plan` of the same
export, then 1 worker (`work --jobs 1`) and, after a fresh queue and destination,
2 workers side by side; the wall time from the first worker's start until the last
exits (the queue empty). Prints one table: wall and CPU of each, and the speedup
(wall 1 worker / wall 2 workers; goal >= 1.8 on this 2-core machine), the median of
the rounds. Input: bench-export.py's generated data (realistic payloads in
SequenceFiles, cached), with more days, since a message is one day's folder and two
workers need several folders each to share evenly. Outputs on tmpfs as in
bench-export.py.
"""
import argparse, importlib.util, os, shutil, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_export", os.path.join(HERE, "bench-export.py"))
be = importlib.util.module_from_spec(spec)
spec.loader.exec_module(be)
sys.path.insert(0, os.path.join(HERE, "lib"))
import sqsprobe  # noqa: E402

KEY, SECRET, REGION = "backfillbench", "backfill-bench-secret", "us-east-1"


def endpoint():
    e = os.environ.get("BACKFILL_TEST_SQS_ENDPOINT")
    if not e:
        sys.exit("BACKFILL_TEST_SQS_ENDPOINT is not set: run under scripts/test-servers.sh --sqs")
    return e


def new_queue(name):
    status, body = sqsprobe.call(endpoint(), KEY, SECRET, REGION,
                                 {"Action": "CreateQueue", "QueueName": name, "Version": "2012-11-05"})
    if status != 200:
        sys.exit(f"CreateQueue: HTTP {status}: {body[:300]!r}")
    return sqsprobe.find(body, "QueueUrl")


def env():
    e = dict(os.environ)
    e.update({"AWS_ENDPOINT_URL_SQS": endpoint(), "AWS_ACCESS_KEY_ID": KEY,
              "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": REGION})
    return e


def run_workers(src, dest, n, tag):
    """Plans the export into a fresh queue, runs n workers; returns (wall, cpu)."""
    shutil.rmtree(dest, ignore_errors=True)
    url = new_queue(f"bench-{tag}-{n}-{os.getpid()}")
    be.sh([be.BIN, "plan", src, dest, "-q", "--queue", url], env=env())
    t0 = time.monotonic()
    procs = []
    for _ in range(n):
        tf = tempfile.NamedTemporaryFile("r", suffix=".time", delete=False)
        p = subprocess.Popen(["/usr/bin/time", "-o", tf.name, "-f", "%U %S", be.BIN, "work", "-q",
                              "--queue", url, "--jobs", "1", "--visibility-timeout", "300"],
                             env=env(), stdout=subprocess.DEVNULL)
        procs.append((p, tf.name))
    cpu = 0.0
    for p, tf in procs:
        if p.wait() != 0:
            sys.exit(f"a worker exited {p.returncode}")
        with open(tf) as f:
            user, sys_ = f.read().split()[-2:]
        os.unlink(tf)
        cpu += float(user) + float(sys_)
    return time.monotonic() - t0, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--days", default="2013-10-01..2013-10-16")
    ap.add_argument("--files-per-day", type=int, default=2)
    ap.add_argument("--records-per-file", type=int, default=34)
    ap.add_argument("--work-dir", default=be.default_work_dir())
    a = ap.parse_args()
    be.sh(["cargo", "build", "--release", "--bins", "--quiet"], cwd=be.ROOT)
    src = be.dataset(a.files_per_day, a.records_per_file, "default", a.days)
    in_mb = be.size_of(src) / 1e6
    work = tempfile.mkdtemp(prefix="backfill-bench-workers-", dir=a.work_dir)
    try:
        one, two = [], []
        for r in range(a.rounds):
            one.append(run_workers(src, os.path.join(work, "one"), 1, f"r{r}"))
            two.append(run_workers(src, os.path.join(work, "two"), 2, f"r{r}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    speedups = sorted(o[0] / t[0] for o, t in zip(one, two))
    med = speedups[len(speedups) // 2]
    print(f"\ninput: {in_mb:.1f} MB of block-compressed (zlib) SequenceFiles, days {a.days}, "
          f"{a.files_per_day} files a day; a message is one day's folder\n")
    print("| run | wall s (median) | CPU s (median) |")
    print("|---|---|---|")
    for name, rows in (("1 worker, --jobs 1", one), ("2 workers, --jobs 1 each", two)):
        walls = sorted(w for w, _ in rows)
        cpus = sorted(c for _, c in rows)
        print(f"| {name} | {walls[len(walls) // 2]:.2f} | {cpus[len(cpus) // 2]:.2f} |")
    print(f"\nspeedup, wall 1 worker / 2 workers: {med:.2f} median of {a.rounds} rounds "
          f"({', '.join(f'{s:.2f}' for s in speedups)})   (goal >= 1.8)")


if __name__ == "__main__":
    main()
