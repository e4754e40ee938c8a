"""`replica_locks` on a real PostgreSQL: what one replica holds, another waits for, within bounds, and nothing is
left held when a waiting request goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from services.ingest.replica_locks import BUCKETS, ReplicaLocks
from shared.db import make_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def advisory_locks(engine: Engine, *, granted: bool) -> int:
    with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = :granted"
        return int(connection.execute(text(query), {"granted": granted}).scalar_one())


async def until(condition: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def test_a_backfill_takes_at_most_one_lock_per_bucket(engine: Engine) -> None:
    async def hold() -> int:
        async with ReplicaLocks(engine).holding("sdtm", [f"NCT1:S-{n}:lab:R{n}" for n in range(100_000)]):
            return advisory_locks(engine, granted=True)

    assert asyncio.run(hold()) == BUCKETS
    assert advisory_locks(engine, granted=True) == 0, "released with the request"


def test_another_replica_waits_then_times_out_with_a_database_error(engine: Engine) -> None:
    async def race() -> None:
        async with ReplicaLocks(engine).holding("edc", ["NCT1:S-1:ae:AE-4"]):
            with pytest.raises(OperationalError, match="lock timeout"):
                async with ReplicaLocks(engine, lock_timeout_seconds=0.2).holding("edc", ["NCT1:S-1:ae:AE-4"]):
                    pass

    asyncio.run(race())


def test_other_sources_do_not_wait(engine: Engine) -> None:
    async def both() -> None:
        edc, fhir = ReplicaLocks(engine), ReplicaLocks(engine, lock_timeout_seconds=0.2)
        async with edc.holding("edc", ["NCT1:S-1:ae:AE-4"]), fhir.holding("fhir", ["NCT1:S-1:ae:AE-4"]):
            assert advisory_locks(engine, granted=True) == 2

    asyncio.run(both())


def test_a_request_cancelled_while_waiting_leaves_nothing_held(engine: Engine) -> None:
    """Its thread still gets the lock once the holder is done; the lock is then given back, not kept forever."""

    async def cancel_the_waiter() -> None:
        holder, waiter = ReplicaLocks(engine), ReplicaLocks(engine)
        async with holder.holding("edc", ["NCT1:S-1:ae:AE-4"]):

            async def wait_for_it() -> None:
                async with waiter.holding("edc", ["NCT1:S-1:ae:AE-4"]):
                    raise AssertionError("never held: cancelled while waiting")

            waiting = asyncio.create_task(wait_for_it())
            await until(lambda: advisory_locks(engine, granted=False) == 1, "the second request waits")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        await until(
            lambda: advisory_locks(engine, granted=True) + advisory_locks(engine, granted=False) == 0,
            "the cancelled request's lock was given back",
        )

    asyncio.run(cancel_the_waiter())
