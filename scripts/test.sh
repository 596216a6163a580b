#!/usr/bin/env bash
# Runs every test of the project, on a fresh machine too:
#   formatting and lints, then the unit and integration tests with a real HDFS
#   (Hadoop 2.7.3 NameNode + DataNode) and a real S3 (SeaweedFS) started on
#   127.0.0.1 by scripts/test-servers.sh, which downloads and caches them on first
#   use and always stops them, even when a test fails.
# With CI=true (CI sets it) or BACKFILL_COLD_CHECK=1 it also runs
# scripts/cold-start-check.sh: the servers from an empty temporary cache (~350 MB
# downloaded again), the path a new machine takes; otherwise it says it skipped it.
# This is the command .ci/run calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build the test binaries before the servers start"
cargo test --workspace --locked --no-run
# Its own temporary cache: the tests below still use (and on a new machine fill) the
# normal one, ~/.cache/backfill.
if [ "${CI:-}" = true ] || [ "${BACKFILL_COLD_CHECK:-}" = 1 ]; then
    step "cold start: test servers from an empty cache (scripts/cold-start-check.sh)"
    scripts/cold-start-check.sh
    cold="passed"
else
    cold="SKIPPED"
    printf 'test.sh: cold-start check SKIPPED (runs when CI=true or BACKFILL_COLD_CHECK=1; alone: scripts/cold-start-check.sh, ~350 MB download)\n' >&2
fi
step "tests, with real HDFS and S3"
scripts/test-servers.sh -- cargo test --workspace --locked
step "all steps passed; cold-start check $cold"
