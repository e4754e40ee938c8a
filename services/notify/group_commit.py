"""Group commit: writes that arrive while one is being committed go together in the next transaction.

A lone write goes at once (nothing waits for company); under a burst, a dispatcher handing over four mails at
a time records their attempts and outcomes in a few commits instead of two per mail. Each caller still gets
its own result only after the transaction holding its write has committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R]]) -> None:
        """`commit` writes every item in one transaction (in a worker thread) and returns one result per item."""
        self._commit = commit
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """The result of `item`'s write, once committed. The commits run in a task of their own, so a caller
        cancelled meanwhile leaves the others' writes going (its own may still be committed, as a write
        already handed to the database would be)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Commit what is waiting, then what arrived meanwhile, until nothing is left. A failed transaction
        fails each of its callers with the error; nothing of it was written."""
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = await asyncio.to_thread(self._commit, [item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
