#!/usr/bin/env bash
# Longer crash campaign than CI runs: SIGKILL the export at many moments, rerun
# until done, and compare every object's sha256 with an uninterrupted run, into a
# local directory and into S3 (real SeaweedFS), with the release build.
#   scripts/crash-campaign.sh [TRIALS]      (default 25; CI runs 4 local + 2 S3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BACKFILL_CRASH_TRIALS="${1:-25}"
exec scripts/test-servers.sh --s3 -- cargo test --release --locked --test tests -- \
    resume::killed_anywhere e2e::e2e_killed_exports_into_s3 --nocapture
