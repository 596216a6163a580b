#!/usr/bin/env bash
# Runs every test of the project, on a fresh machine too:
#   formatting and lints, then the unit and integration tests with a real HDFS
#   (Hadoop 2.7.3 NameNode + DataNode) and a real S3 (SeaweedFS) started on
#   127.0.0.1 by scripts/test-servers.sh, which downloads and caches them on first
#   use and always stops them, even when a test fails.
# This is the command .ci/run calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings
step "build the test binaries before the servers start"
cargo test --locked --no-run
step "tests, with real HDFS and S3"
scripts/test-servers.sh -- cargo test --locked
