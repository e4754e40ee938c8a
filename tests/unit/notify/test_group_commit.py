"""Group commit: a lone write commits at once; writes arriving during a commit share the next one; a failed
commit fails each of its callers and leaves the next one going."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from services.notify.group_commit import GroupCommit


class Store:
    """Records each transaction's items; the first one can be held open until released."""

    def __init__(self, *, hold_first: bool = False, fail_on: str | None = None) -> None:
        self.transactions: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_on = fail_on

    def commit(self, items: Sequence[str]) -> list[str]:
        self.entered.set()
        self.release.wait(timeout=10)
        if self.fail_on in items:
            raise RuntimeError(f"cannot write {self.fail_on}")
        self.transactions.append(list(items))
        return [f"{item} written" for item in items]


async def test_a_lone_write_commits_at_once() -> None:
    store = Store()
    group = GroupCommit(store.commit)
    assert await group.submit("a") == "a written"
    assert await group.submit("b") == "b written"
    assert store.transactions == [["a"], ["b"]]


async def test_writes_arriving_during_a_commit_share_the_next_one() -> None:
    store = Store(hold_first=True)
    group = GroupCommit(store.commit)
    first = asyncio.create_task(group.submit("a"))
    await asyncio.to_thread(store.entered.wait, 10)  # "a" is being committed
    later = [asyncio.create_task(group.submit(item)) for item in ("b", "c", "d")]
    await asyncio.sleep(0)  # let them queue
    store.release.set()
    assert await first == "a written"
    assert [await task for task in later] == ["b written", "c written", "d written"]
    assert store.transactions == [["a"], ["b", "c", "d"]]


async def test_a_failed_commit_fails_its_callers_and_the_next_commit_goes() -> None:
    store = Store(hold_first=True, fail_on="b")
    group = GroupCommit(store.commit)
    first = asyncio.create_task(group.submit("a"))
    await asyncio.to_thread(store.entered.wait, 10)
    failing = [asyncio.create_task(group.submit(item)) for item in ("b", "c")]
    await asyncio.sleep(0)
    store.release.set()
    assert await first == "a written"
    for task in failing:
        with pytest.raises(RuntimeError, match="cannot write b"):
            await task
    assert await group.submit("e") == "e written"
    assert store.transactions == [["a"], ["e"]]
