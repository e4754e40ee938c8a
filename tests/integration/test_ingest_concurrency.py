"""The same record posted many times at once (an EDC retrying impatiently), on SQLite and PostgreSQL:
never a 5xx, one row per record in ingest's version table, and one envelope id however many copies race."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.ingest.main import create_app
from services.ingest.models import RecordVersion
from services.ingest.settings import IngestSettings
from shared.db import make_engine
from tests.unit.conftest import FakePublisher

pytestmark = pytest.mark.integration
TOKEN = "concurrency-token-0123456789abcdef"
ROW = (
    "STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBORRES,LBORRESU,LBORNRLO,LBORNRHI,LBDTC\n"
    "NCT07212335,LB,101-001,1,PLAT,24,10^9/L,150,400,2026-01-21T08:00:00Z\n"
)


async def post_many(app: object, times: int) -> list[int]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "text/csv"}
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        responses = await asyncio.gather(
            *(client.post("/v1/sources/edc/sdtm", content=ROW, headers=headers) for _ in range(times))
        )
    return [r.status_code for r in responses]


def test_concurrent_first_posts_of_one_record(database_url: str, tmp_path: Path) -> None:
    sources = {"edc": {"kind": "sdtm", "trial": "NCT07212335", "auth": {"scheme": "bearer", "secret": TOKEN}}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    settings = IngestSettings(
        database_url=database_url, sources_path=tmp_path / "sources.yaml", var_dir=tmp_path, background_jobs=False
    )
    publisher = FakePublisher()
    app = create_app(settings, publisher=publisher, registry=CollectorRegistry(), env={})
    statuses = asyncio.run(post_many(app, 12))
    assert all(s in (200, 202) for s in statuses), statuses
    assert statuses.count(202) >= 1
    engine = make_engine(database_url)
    with Session(engine) as session:
        assert len(session.exec(select(RecordVersion)).all()) == 1
    engine.dispose()
    ids = {json.loads(value)["id"] for _topic, _key, value in publisher.messages}
    assert len(ids) == 1, "racing copies may all be published, but as one envelope id that consumers dedupe"
