"""Group commit: requests waiting to make their idempotency records durable share one transaction and one sync.

A request hands its write over after the broker acknowledged its events and waits until the transaction that
holds it has committed, so 202 still means both the broker's ack and the record are durable. While one commit
is on disk the next requests queue up; the next commit takes all of them. One writer at a time per process also
means SQLite's single-writer lock is never fought over by the request threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine

from shared.http import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)
Job = TypeVar("Job")


class CommitQueue(Generic[Job]):
    def __init__(self, engine: Engine, write: Callable[[Connection, Sequence[Job]], None]) -> None:
        self._engine = engine
        self._write = write
        self._pending: list[tuple[Job, asyncio.Future[None]]] = []
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def commit(self, job: Job) -> None:
        """Return once `job` is committed; raise what the database raised for it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        if not self._draining:
            self._draining = True
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await future

    async def _drain(self) -> None:
        batch: list[tuple[Job, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self._transaction, [job for job, _ in batch])
                except Exception as exc:
                    if len(batch) == 1 or isinstance(exc, DATABASE_UNAVAILABLE):
                        _settle(batch, exc)
                    else:  # one request's bad row must not fail the others: commit each on its own
                        log.warning("a shared commit of %d requests failed; committing each alone", len(batch))
                        await self._one_by_one(batch)
                else:
                    _settle(batch, None)
                batch = []
        except BaseException as exc:  # cancelled at shutdown: nobody is left waiting without an answer
            _settle([*batch, *self._pending], exc)
            self._pending = []
            raise
        finally:
            self._draining = False

    async def _one_by_one(self, batch: list[tuple[Job, asyncio.Future[None]]]) -> None:
        for job, future in batch:
            try:
                await asyncio.to_thread(self._transaction, [job])
            except Exception as exc:
                _settle([(job, future)], exc)
            else:
                _settle([(job, future)], None)

    def _transaction(self, jobs: list[Job]) -> None:
        with self._engine.begin() as connection:
            self._write(connection, jobs)


def _settle(batch: Sequence[tuple[object, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, future in batch:
        if future.done():  # the request was cancelled (its client went away); its write stands
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
