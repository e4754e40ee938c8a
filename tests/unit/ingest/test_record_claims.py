"""Claims on the records whose version a request decides: overlapping requests go one at a time, others do not wait,
and a waiter that gives up (its client went away) leaves the holder and the other waiters as they were."""

from __future__ import annotations

import asyncio

from services.ingest.record_claims import RecordClaims


async def settle() -> None:
    """Let every task that can run, run (no timing: the loop is idle afterwards)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_request_about_a_held_record_waits_until_it_is_released() -> None:
    claims = RecordClaims()
    order: list[str] = []

    async def request(name: str, keys: list[str], release: asyncio.Event | None = None) -> None:
        async with claims.holding("edc", keys):
            order.append(f"{name} in")
            if release is not None:
                await release.wait()
            order.append(f"{name} out")

    release = asyncio.Event()
    first = asyncio.create_task(request("first", ["ae-1", "ae-2"], release))
    await settle()
    second = asyncio.create_task(request("second", ["ae-2", "ae-3"]))
    other = asyncio.create_task(request("other", ["ae-9"]))
    await settle()
    assert order == ["first in", "other in", "other out"], "another record does not wait"
    assert claims.waiting == 1
    release.set()
    await asyncio.gather(first, second, other)
    assert order[3:] == ["first out", "second in", "second out"]
    assert claims.waiting == 0


async def test_the_same_key_of_another_source_is_another_record() -> None:
    claims = RecordClaims()
    async with claims.holding("fhir", ["ae-1"]), claims.holding("sdtm", ["ae-1"]):
        assert claims.waiting == 0


async def test_a_waiter_cancelled_leaves_the_holder_and_the_next_waiter_unharmed() -> None:
    claims = RecordClaims()
    release = asyncio.Event()
    entered: list[str] = []

    async def hold() -> None:
        async with claims.holding("edc", ["ae-1"]):
            await release.wait()

    async def wait_for(name: str) -> None:
        async with claims.holding("edc", ["ae-1"]):
            entered.append(name)

    holder = asyncio.create_task(hold())
    await settle()
    gone, patient = asyncio.create_task(wait_for("gone")), asyncio.create_task(wait_for("patient"))
    await settle()
    gone.cancel()
    await settle()
    assert gone.cancelled() and claims.waiting == 1
    release.set()
    await asyncio.gather(holder, patient)
    assert entered == ["patient"]


async def test_a_request_that_fails_releases_its_records() -> None:
    claims = RecordClaims()
    try:
        async with claims.holding("edc", ["ae-1"]):
            raise RuntimeError("the broker failed")
    except RuntimeError:
        pass
    async with claims.holding("edc", ["ae-1"]):
        assert claims.waiting == 0
