#!/usr/bin/env bash
# A headless browser for the tests that read a rendered page (verify --html).
#
#   scripts/browser.sh    prints the path of chromium-headless-shell on stdout,
#                         installing Debian's package (~75 MB) on first use
#
# Fails loudly (exit 1, why on stderr) when it is not there and cannot be installed:
# the tests that need it fail with that message, they never skip.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

find_browser() {
    command -v chromium-headless-shell \
        || { [ -x /usr/lib/chromium/chromium-headless-shell ] && echo /usr/lib/chromium/chromium-headless-shell; } \
        || true
}

bin="$(find_browser)"
if [ -z "$bin" ]; then
    log "chromium-headless-shell not found; installing Debian's package"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    # The package lists may be stale on a fresh machine: update once, then install.
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium-headless-shell >&2; then
        $sudo apt-get update -q >&2 || die "apt-get update failed; install chromium-headless-shell by hand"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium-headless-shell >&2 \
            || die "could not install chromium-headless-shell (apt-get failed; needs root or passwordless sudo)"
    fi
    bin="$(find_browser)"
    [ -n "$bin" ] || die "chromium-headless-shell was installed but is not on PATH"
fi
echo "$bin"
