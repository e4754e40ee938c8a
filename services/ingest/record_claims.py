"""Records whose next version ingest decides are taken by one request at a time, from the lookup to the record.

Ingest numbers a record's versions itself when the sender keeps none (`SourceRecord.assign_version`) and, for a
sender without delivery ids, tells a resend from news by the content last published (`content_identified`). Both
read what the database holds, publish, then record: two requests about one record in flight together (a form saved
twice within a second) read the same version, so both published version n + 1 with different content, and safety
kept the first one received and only flagged the other (`conflicting_resend`): a grade raised by the second save
was not graded. Here the second waits until the first has recorded what it published, then reads it.

Only such records are claimed: a record with the sender's own version and delivery id needs no claim (its order is
the sender's), so the single-event hot path takes none. Claims are per process; on PostgreSQL a claim also takes
the advisory locks of `replica_locks`, which order the replicas against each other (SQLite has one process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol


class AcrossReplicas(Protocol):
    """What orders claims across processes (`replica_locks.ReplicaLocks` on PostgreSQL)."""

    def holding(self, source_id: str, record_keys: Iterable[str]) -> AbstractAsyncContextManager[None]: ...


class RecordClaims:
    """Which (source, record key) a request in flight holds; another request about one of them waits for it."""

    def __init__(self, replicas: AcrossReplicas | None = None) -> None:
        self._replicas = replicas
        self._held: dict[tuple[str, str], asyncio.Event] = {}
        self.waiting = 0
        """Requests waiting for a claim now (tests watch it)."""

    @asynccontextmanager
    async def holding(self, source_id: str, record_keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold these records for the block, once no other request holds any of them. All are taken at once, never
        one by one, so two requests cannot each hold what the other waits for."""
        wanted = {(source_id, key) for key in record_keys}
        if not wanted:
            yield
            return
        while (busy := next((self._held[key] for key in wanted if key in self._held), None)) is not None:
            self.waiting += 1
            try:
                await busy.wait()  # an Event, not a shared future: a waiter cancelled cancels only its own wait
            finally:
                self.waiting -= 1
        done = asyncio.Event()
        for key in wanted:
            self._held[key] = done
        try:
            if self._replicas is None:
                yield
            else:  # after this process's own turn: a process waits on the database once, not once per request
                async with self._replicas.holding(source_id, [key for _, key in wanted]):
                    yield
        finally:
            for key in wanted:
                del self._held[key]
            done.set()
