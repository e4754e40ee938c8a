"""Group commit: requests that wait together share one transaction, each answers only once it is committed, and one
request's bad row or a database outage is answered to the right requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from services.ingest.commit_queue import CommitQueue
from services.ingest.store import AcceptedWrite, VersionUpdate, known_for, save_accepted
from shared.db import make_engine
from tests.unit.conftest import START


def engine_with_table(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE rows (id INTEGER PRIMARY KEY)"))
    return engine


def rows(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return [r[0] for r in connection.execute(text("SELECT id FROM rows ORDER BY id"))]


def test_concurrent_requests_share_commits_and_each_answers_after_its_commit(tmp_path: Path) -> None:
    engine = engine_with_table(tmp_path)
    batches: list[list[int]] = []

    def write(connection: Connection, jobs: Sequence[int]) -> None:
        batches.append(list(jobs))
        for job in jobs:
            connection.execute(text("INSERT INTO rows (id) VALUES (:id)"), {"id": job})

    queue: CommitQueue[int] = CommitQueue(engine, write)

    async def request(job: int) -> list[int]:
        await queue.commit(job)
        return rows(engine)  # what is durable when this request would answer

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(request(n) for n in range(1, 21)))

    seen = asyncio.run(main())
    assert rows(engine) == list(range(1, 21))
    assert len(batches) < 20, "waiting requests were committed together"
    assert sorted(job for batch in batches for job in batch) == list(range(1, 21))
    for job, durable in zip(range(1, 21), seen, strict=True):
        assert job in durable


def test_one_bad_row_fails_only_its_own_request(tmp_path: Path) -> None:
    engine = engine_with_table(tmp_path)

    def write(connection: Connection, jobs: Sequence[int]) -> None:
        for job in jobs:
            connection.execute(text("INSERT INTO rows (id) VALUES (:id)"), {"id": job})

    with engine.begin() as connection:
        connection.execute(text("INSERT INTO rows (id) VALUES (3)"))
    queue: CommitQueue[int] = CommitQueue(engine, write)

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(queue.commit(n) for n in (1, 2, 3, 4)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [type(o).__name__ if o else None for o in outcomes] == [None, None, "IntegrityError", None]
    assert isinstance(outcomes[2], IntegrityError)
    assert rows(engine) == [1, 2, 3, 4]


def test_a_database_outage_is_answered_to_every_waiting_request(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gone' / 'q.db'}")
    (tmp_path / "gone").rmdir()  # make_engine created the folder; without it SQLite cannot open the file

    def write(connection: Connection, jobs: Sequence[int]) -> None:
        raise AssertionError("never reached: the connection cannot be opened")

    queue: CommitQueue[int] = CommitQueue(engine, write)

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(queue.commit(n) for n in range(5)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, OperationalError) for o in outcomes), outcomes


@pytest.mark.parametrize("jobs", [1, 3])
def test_the_queue_can_be_used_again_after_it_drained(tmp_path: Path, jobs: int) -> None:
    engine = engine_with_table(tmp_path)

    def write(connection: Connection, batch: Sequence[int]) -> None:
        for job in batch:
            connection.execute(text("INSERT INTO rows (id) VALUES (:id)"), {"id": job})

    queue: CommitQueue[int] = CommitQueue(engine, write)

    async def main() -> None:
        await asyncio.gather(*(queue.commit(n) for n in range(1, jobs + 1)))
        await queue.commit(100)

    asyncio.run(main())
    assert rows(engine) == [*range(1, jobs + 1), 100]


def test_driver_errors_of_the_hot_path_are_sqlalchemys_so_they_answer_503(tmp_path: Path) -> None:
    """The lookup and the writes use the driver's cursor; a failing database must still raise what the services
    map to 503 (sqlalchemy.exc.OperationalError), never a bare sqlite3/psycopg error that would be a 500."""
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no ingest tables: every statement fails
    write = AcceptedWrite(
        source_id="edc", envelopes=[], updates=[], now=START, webhook_id="wh", webhook_body_sha256="0"
    )
    with engine.connect() as connection, pytest.raises(OperationalError):
        known_for(connection, source_id="edc", event_ids=["e1"], record_keys=["k1"], webhook_id="wh")
    update = VersionUpdate("k1", None, 1, "lab", "R1", "NCT07212335", "S-1", "SITE-1", False, START, "h")
    with engine.begin() as connection, pytest.raises(OperationalError):
        save_accepted(connection, writes=[replace(write, updates=[update])])
