#!/usr/bin/env bash
# Debian's headless Chromium, for the test that opens an evidence bundle's summary.html as a
# person would (tests/evidence/test_summary.py drives it over the DevTools protocol itself, so
# no chromium-driver is needed).
#
#   scripts/browser.sh install   install Debian's chromium and fonts for its text (idempotent)
#   scripts/browser.sh version   print the installed browser's version
set -euo pipefail

CHROMIUM=/usr/bin/chromium

log() { echo "browser.sh: $*" >&2; }

install() {
    if [ -x "$CHROMIUM" ] && fc-list 2>/dev/null | grep -qi dejavu; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # DejaVu covers Latin and Cyrillic, so a Russian summary's screenshot shows letters.
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fontconfig >/dev/null
    log "installed $("$CHROMIUM" --version)"
}

case "${1:-}" in
install) install ;;
version) "$CHROMIUM" --version ;;
*)
    echo "usage: $0 install|version" >&2
    exit 2
    ;;
esac
