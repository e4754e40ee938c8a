#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium for the console's browser tests, installing Debian's
# `chromium` package when it is missing (as root). Playwright drives this executable; it never downloads a
# browser of its own (`playwright install` is not used: sites and CI have no access to its download host).
set -euo pipefail

for candidate in "${SENTINEL_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
        echo "$candidate"
        exit 0
    fi
done

if [[ $(id -u) -ne 0 ]]; then
    echo "chromium is missing: install Debian's package as root ('apt-get install -y chromium')" >&2
    exit 1
fi
echo "installing Debian's chromium package..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >&2; }
echo /usr/bin/chromium
