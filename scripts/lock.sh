#!/usr/bin/env bash
# `make lock`: regenerate the lock files from pyproject.toml with uv (from PyPI, pinned below).
#   requirements/runtime.lock  the services' dependencies (the container image installs exactly these)
#   requirements/dev.lock      the same plus the dev extra (make venv, make test, CI)
# Universal (every platform, Python >= 3.11) and with hashes, so an install is the same everywhere and a
# tampered download fails. Each lock carries the fingerprint of pyproject's declarations, which `make venv`
# checks (scripts/lock_stamp.py): after adding a dependency, run this once and commit both files.
# Existing pins are kept unless a declaration needs another version; extra arguments go to `uv pip compile`,
# e.g. `scripts/lock.sh --upgrade-package fastapi` or `scripts/lock.sh --upgrade` (everything to the newest).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION="0.9.5"
PYTHON="${PYTHON:-python3}"
TOOLS="${SENTINEL_TOOLS_DIR:-$HOME/.cache/sentinel}/uv-$UV_VERSION"
if [[ ! -x "$TOOLS/bin/uv" ]]; then
    echo "lock: installing uv $UV_VERSION into $TOOLS" >&2
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q "uv==$UV_VERSION"
fi
stamp="$("$PYTHON" scripts/lock_stamp.py)"
mkdir -p requirements
compile() {
    local out="$1"; shift
    local tmp
    tmp="$(mktemp)"
    # Seeded with the current pins, which uv keeps unless they must change (or --upgrade / --upgrade-package).
    if [[ -f "$out" ]]; then grep -v '^# pyproject-dependencies-sha256: ' "$out" > "$tmp"; fi
    "$TOOLS/bin/uv" pip compile pyproject.toml "$@" \
        --universal --python-version 3.11 --generate-hashes --no-strip-extras \
        --custom-compile-command "make lock" --quiet --output-file "$tmp" "${EXTRA_ARGS[@]}"
    { echo "# pyproject-dependencies-sha256: $stamp"; cat "$tmp"; } > "$out"
    rm -f "$tmp"
    echo "lock: wrote $out ($(grep -c '==' "$out") pinned packages)" >&2
}
EXTRA_ARGS=("$@")
compile requirements/runtime.lock
compile requirements/dev.lock --extra dev
