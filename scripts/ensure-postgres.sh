#!/usr/bin/env bash
# Ensure a throwaway PostgreSQL server for the tests: 127.0.0.1:$SENTINEL_TEST_PG_PORT (default 55432),
# trust auth, superuser "postgres", durability off (fast; the data is disposable).
# Why a private cluster: CI machines may have no PostgreSQL at all, and a developer's own server on 5432
# must not be touched. Idempotent: if the port already answers, it only prints the URL.
#
# Usage: scripts/ensure-postgres.sh [start|stop|status]
# stdout: exactly one line, the SQLAlchemy URL (start/status); all chatter goes to stderr.
# Env: SENTINEL_TEST_PG_PORT, SENTINEL_TEST_PG_DIR (default /tmp/sentinel-pg-$PORT),
#      SENTINEL_TEST_PG_BINDIR (directory holding initdb/pg_ctl; found automatically otherwise).
set -euo pipefail

PORT="${SENTINEL_TEST_PG_PORT:-55432}"
DIR="${SENTINEL_TEST_PG_DIR:-/tmp/sentinel-pg-$PORT}"
URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
ACTION="${1:-start}"

say() { echo "ensure-postgres: $*" >&2; }
die() { say "$*"; exit 1; }

# Newest server bin dir: explicit override, Debian's versioned dirs, then whatever is on PATH.
find_bindir() {
    if [[ -n "${SENTINEL_TEST_PG_BINDIR:-}" ]]; then
        [[ -x "$SENTINEL_TEST_PG_BINDIR/initdb" ]] || return 1
        echo "$SENTINEL_TEST_PG_BINDIR"; return 0
    fi
    local newest
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$newest" && -x "$newest/initdb" ]]; then
        echo "$newest"; return 0
    fi
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"; return 0
    fi
    return 1
}

is_ready() {
    local isready="${BINDIR:+$BINDIR/pg_isready}"
    [[ -n "$isready" && -x "$isready" ]] || isready="$(command -v pg_isready || true)"
    [[ -n "$isready" ]] && "$isready" -q -h 127.0.0.1 -p "$PORT" -t 2 >/dev/null 2>&1
}

# initdb/postgres refuse to run as root: as root, run them as the "postgres" OS user.
as_owner() {
    if [[ "$(id -u)" -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    fi
}

install_server() {
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "PostgreSQL server not found: running apt-get update && apt-get install -y postgresql"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else
        die "PostgreSQL server binaries (initdb, pg_ctl) not found; install them, e.g." \
            "'sudo apt-get install postgresql' or 'brew install postgresql', or set SENTINEL_TEST_PG_BINDIR."
    fi
}

prepare_dir() {
    if [[ "$(id -u)" -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
        mkdir -p "$DIR"
        chown postgres: "$DIR"
    else
        mkdir -p "$DIR"
        [[ -O "$DIR" ]] || die "$DIR belongs to another user; set SENTINEL_TEST_PG_DIR to a directory of yours."
    fi
    chmod 700 "$DIR"
    if [[ ! -f "$DIR/PG_VERSION" ]]; then
        say "initdb in $DIR"
        as_owner "$BINDIR/initdb" -D "$DIR" -A trust -U postgres --no-sync --encoding=UTF8 --locale=C >/dev/null
    fi
}

start_server() {
    local opts="-p $PORT -c listen_addresses=127.0.0.1 -k '$DIR' -c fsync=off -c synchronous_commit=off"
    opts+=" -c full_page_writes=off -c max_connections=200"
    say "starting PostgreSQL ($BINDIR) on 127.0.0.1:$PORT, data in $DIR"
    if ! as_owner "$BINDIR/pg_ctl" -D "$DIR" -l "$DIR/server.log" -o "$opts" -w -t 60 start >&2; then
        say "PostgreSQL did not start; last lines of $DIR/server.log:"
        tail -n 20 "$DIR/server.log" >&2 || true
        exit 1
    fi
}

BINDIR="$(find_bindir || true)"

case "$ACTION" in
    start)
        if is_ready; then
            say "PostgreSQL already answers on 127.0.0.1:$PORT"
            echo "$URL"; exit 0
        fi
        if [[ -z "$BINDIR" ]]; then
            install_server
            BINDIR="$(find_bindir)" || die "apt-get installed postgresql but no initdb was found."
        fi
        prepare_dir
        start_server
        echo "$URL"
        ;;
    stop)
        if [[ -n "$BINDIR" && -f "$DIR/postmaster.pid" ]]; then
            as_owner "$BINDIR/pg_ctl" -D "$DIR" -m fast -w stop >&2
        else
            say "no server running from $DIR"
        fi
        ;;
    status)
        is_ready || die "PostgreSQL does not answer on 127.0.0.1:$PORT"
        echo "$URL"
        ;;
    *)
        die "usage: $0 [start|stop|status]"
        ;;
esac
