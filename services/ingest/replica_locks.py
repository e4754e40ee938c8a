"""Record claims across ingest replicas on PostgreSQL: advisory locks held from the lookup to the record.

`record_claims` makes requests about one record take turns within a process. Two replicas behind one load
balancer each have their own turns, so two saves of one record landing on different replicas could still both
read version n and both publish n + 1 (safety then grades one of them and only flags the other). Here a request
also holds, for its source, transaction-level advisory locks that every replica takes the same way.

A source's records are spread over `BUCKETS` locks (by a hash of the record key), not a lock per record: a backfill
of 100,000 rows would not fit PostgreSQL's shared lock table (64 per connection by default). Two unrelated records
in one bucket only wait for each other, for the few milliseconds of a request; a request of many records takes
every bucket of its source and other replicas' numbered posts of that source wait for it, as the same replica's
posts about its records do. Buckets are taken in ascending order, so two requests never hold what the other
waits for; PostgreSQL's deadlock detector would break such a cycle anyway (one request then fails with 503).

A wait is bounded by `lock_timeout`: a replica that holds the locks for longer is answered with 503 and
Retry-After, as an unreachable database is. The locks go with the transaction: released at the end of the
request, or by PostgreSQL when a replica dies with its connection.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)
BUCKETS = 32
HOLDERS = 4
"""Requests of one process holding locks at once (each holds a pooled connection): the rest wait their turn, so
lock holders never take the pool from the lookups and commits they wait for."""
_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(:source, bucket)) FROM unnest(CAST(:buckets AS integer[])) AS t(bucket)"
)


def source_lock_id(source_id: str) -> int:
    """A stable signed 32-bit id for the source (the first key of PostgreSQL's two-key advisory locks)."""
    return zlib.crc32(f"sentinel-ingest-record:{source_id}".encode()) - 2**31


def buckets(record_keys: Iterable[str]) -> list[int]:
    """The buckets these records fall in, ascending (the order every replica takes them in)."""
    return sorted({zlib.crc32(key.encode()) % BUCKETS for key in record_keys})


class ReplicaLocks:
    """PostgreSQL advisory locks on a source's record buckets, one transaction per holding request."""

    def __init__(self, engine: Engine, *, lock_timeout_seconds: float = 30.0) -> None:
        self._engine = engine
        self._timeout_ms = round(lock_timeout_seconds * 1000)
        self._holders = asyncio.Semaphore(HOLDERS)

    @asynccontextmanager
    async def holding(self, source_id: str, record_keys: Iterable[str]) -> AsyncIterator[None]:
        wanted = buckets(record_keys)
        if not wanted:
            yield
            return
        async with self._holders:
            taking = asyncio.ensure_future(asyncio.to_thread(self._lock, source_lock_id(source_id), wanted))
            try:
                connection = await asyncio.shield(taking)
            except asyncio.CancelledError:  # the thread still takes the locks: give them back once it has
                taking.add_done_callback(_release_when_taken)
                raise
            try:
                yield
            finally:
                await asyncio.to_thread(_release, connection)

    def _lock(self, source: int, wanted: list[int]) -> Connection:
        connection = self._engine.connect()
        try:
            connection.execute(text(f"SET LOCAL lock_timeout = {self._timeout_ms}"))
            connection.execute(_LOCK, {"source": source, "buckets": wanted})
        except BaseException:
            _release(connection)
            raise
        return connection


def _release(connection: Connection) -> None:
    """End the transaction (which releases its advisory locks) and return the connection to the pool."""
    try:
        connection.rollback()
    finally:
        connection.close()


def _release_when_taken(taking: asyncio.Future[Connection]) -> None:
    if not taking.cancelled() and taking.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, _release_quietly, taking.result())


def _release_quietly(connection: Connection) -> None:
    """No request is left to fail: a connection that cannot end its transaction is logged (PostgreSQL releases a
    dead connection's locks with it)."""
    try:
        _release(connection)
    except Exception:
        log.exception("releasing the record locks of a cancelled request failed")
