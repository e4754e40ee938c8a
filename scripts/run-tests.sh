#!/usr/bin/env bash
# `make test`: lint, type-check, then the whole suite against the real broker and PostgreSQL.
# Starts what it needs (and stops the broker again if it was the one to start it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
started_broker=0

if ! $VENV/bin/sentinel kafka status >/dev/null 2>&1; then
    started_broker=1
fi
cleanup() {
    if [[ $started_broker -eq 1 ]]; then
        $VENV/bin/sentinel kafka down || true
    fi
}
trap cleanup EXIT

echo "== broker"
$VENV/bin/sentinel kafka up

echo "== postgresql"
SENTINEL_TEST_DATABASE_URL="$(scripts/ensure-postgres.sh start)"
export SENTINEL_TEST_DATABASE_URL
echo "$SENTINEL_TEST_DATABASE_URL"

echo "== deploy tools (promtool, prometheus, kustomize)"
PATH="$(scripts/ensure-tools.sh):$PATH"
export PATH

echo "== chromium (the console's browser tests: Debian's package, driven by Playwright)"
SENTINEL_CHROMIUM="$(scripts/ensure-chromium.sh)"
export SENTINEL_CHROMIUM

echo "== lint and types"
$VENV/bin/ruff check shared services tests bench
$VENV/bin/ruff format --check shared services tests bench
$VENV/bin/mypy

echo "== tests"
export SENTINEL_REQUIRE_SERVICES=1   # integration tests fail, never skip, when a real service is missing
$VENV/bin/pytest tests -q -p no:cacheprovider "$@"
