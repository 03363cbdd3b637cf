#!/usr/bin/env bash
# Installs Debian's Chromium for the real-browser widget test, where that is possible.
# Elsewhere it explains how to enable the test; the test then skips (fails under CI=true).
set -u
for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
        exit 0
    fi
done
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: Chromium is missing; run 'sudo apt-get install chromium' to enable the browser test." >&2
        exit 0
    fi
    echo "install-browser: installing Debian's chromium (about a minute)..."
    $SUDO apt-get update -qq >/dev/null && \
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null && exit 0
    echo "install-browser: apt-get could not install chromium; the browser test will skip." >&2
    exit 0
fi
echo "install-browser: no Chromium found; install Chromium (or set CELEBALIB_CHROMIUM to its path) to enable the browser test." >&2
exit 0
