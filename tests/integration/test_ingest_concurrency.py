"""The same record posted many times at once (an EDC retrying impatiently), on SQLite and PostgreSQL:
never a 5xx, one row per record in ingest's version table, and one publication however many copies race; two
different saves of one record in flight together get two versions (`record_claims`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlmodel import Session, select

from services.ingest.main import create_app
from services.ingest.models import RecordVersion
from services.ingest.settings import IngestSettings
from shared.db import make_engine
from shared.events import CLINICAL_ADAPTER, AeReported
from tests.unit.conftest import FakePublisher

pytestmark = pytest.mark.integration
TOKEN = "concurrency-token-0123456789abcdef"
ROW = (
    "STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBORRES,LBORRESU,LBORNRLO,LBORNRHI,LBDTC\n"
    "NCT07212335,LB,101-001,1,PLAT,24,10^9/L,150,400,2026-01-21T08:00:00Z\n"
)


async def post_many(app: object, bodies: Sequence[str], content_type: str = "text/csv") -> list[int]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": content_type}
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        responses = await asyncio.gather(
            *(client.post("/v1/sources/edc/sdtm", content=body, headers=headers) for body in bodies)
        )
    return [r.status_code for r in responses]


def sdtm_app(database_url: str, tmp_path: Path, publisher: FakePublisher) -> object:
    tmp_path.mkdir(exist_ok=True)
    sources = {"edc": {"kind": "sdtm", "trial": "NCT07212335", "auth": {"scheme": "bearer", "secret": TOKEN}}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    settings = IngestSettings(
        database_url=database_url, sources_path=tmp_path / "sources.yaml", var_dir=tmp_path, background_jobs=False
    )
    return create_app(settings, publisher=publisher, registry=CollectorRegistry(), env={})


def test_concurrent_first_posts_of_one_record(database_url: str, tmp_path: Path) -> None:
    publisher = FakePublisher()
    app = sdtm_app(database_url, tmp_path, publisher)
    statuses = asyncio.run(post_many(app, [ROW] * 12))
    assert sorted(statuses) == [200] * 11 + [202], "one publishes; the others wait for it and find it published"
    engine = make_engine(database_url)
    with Session(engine) as session:
        assert len(session.exec(select(RecordVersion)).all()) == 1
    engine.dispose()
    assert len(publisher.messages) == 1


def test_two_saves_of_one_ae_in_flight_together_get_two_versions(database_url: str, tmp_path: Path) -> None:
    """A sender without versions (SDTM: ingest numbers an AE's versions) posts the AE twice at once, grade 3 then,
    corrected, grade 4: each save is a version of its own, so safety grades both. Both read 'no version yet' before
    claims: both went out as version 1, and safety kept the one it saw first (a conflicting resend of the other)."""
    publisher = FakePublisher()
    app = sdtm_app(database_url, tmp_path, publisher)
    row = {"DOMAIN": "AE", "STUDYID": "NCT07212335", "USUBJID": "101-001", "AESEQ": 4, "AETERM": "Pyrexia"}
    saves = [json.dumps({"rows": [{**row, "AETOXGR": grade}]}) for grade in ("3", "4")]
    assert asyncio.run(post_many(app, saves, "application/json")) == [202, 202]
    published = [CLINICAL_ADAPTER.validate_json(value) for _topic, _key, value in publisher.messages]
    versions = sorted((e.data.version, e.data.grade) for e in published if isinstance(e, AeReported))
    assert [version for version, _ in versions] == [1, 2], versions
    assert {grade for _, grade in versions} == {3, 4}


class HeldPublisher(FakePublisher):
    """Holds its first publication until `release()` says the other replica has had its chance to race it."""

    def __init__(self, released: Callable[[], Awaitable[None]]) -> None:
        super().__init__()
        self._released = released
        self.publishing = asyncio.Event()

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.publishing.set()
        await self._released()
        await super().publish(topic, key=key, value=value, headers=headers)


def test_two_saves_of_one_ae_on_two_replicas_get_two_versions(postgres_url: str, tmp_path: Path) -> None:
    """Two ingest replicas on one PostgreSQL (each with its own in-process claims) get the two saves of one AE at
    once. The first holds its publication until the second either publishes too (the race: both version 1) or waits
    for the first's advisory lock (`replica_locks`): then each save is a version of its own."""
    second = FakePublisher()
    engine = make_engine(postgres_url)

    def waiting_for_a_lock() -> bool:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return bool(connection.execute(text(query)).scalar_one())

    async def until_the_second_replica_waits_or_publishes() -> None:
        deadline = asyncio.get_running_loop().time() + 30
        while not second.messages and not await asyncio.to_thread(waiting_for_a_lock):
            assert asyncio.get_running_loop().time() < deadline, "the second replica neither waited nor published"
            await asyncio.sleep(0.01)

    first = HeldPublisher(until_the_second_replica_waits_or_publishes)
    replicas = [sdtm_app(postgres_url, tmp_path / name, publisher) for name, publisher in (("1", first), ("2", second))]
    row = {"DOMAIN": "AE", "STUDYID": "NCT07212335", "USUBJID": "101-001", "AESEQ": 4, "AETERM": "Pyrexia"}
    saves = [json.dumps({"rows": [{**row, "AETOXGR": grade}]}) for grade in ("3", "4")]

    async def post_to_both() -> list[int]:
        first_post = asyncio.create_task(post_many(replicas[0], saves[:1], "application/json"))
        await asyncio.wait_for(first.publishing.wait(), timeout=30)  # it has read 'no version yet'
        return [*await post_many(replicas[1], saves[1:], "application/json"), *await first_post]

    try:
        assert asyncio.run(post_to_both()) == [202, 202]
    finally:
        engine.dispose()
    published = [CLINICAL_ADAPTER.validate_json(value) for _t, _k, value in [*first.messages, *second.messages]]
    versions = sorted((e.data.version, e.data.grade) for e in published if isinstance(e, AeReported))
    assert [version for version, _ in versions] == [1, 2], versions
    assert {grade for _, grade in versions} == {3, 4}
