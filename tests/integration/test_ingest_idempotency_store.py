"""Ingest's idempotency writes (driver SQL, group commit) behave the same on SQLite and PostgreSQL: versions move
forwards only, the first receipt is kept, duplicates and stale versions are not published, and a webhook-id reused
with another body is refused."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.ingest.main import create_app
from services.ingest.models import AcceptedDelivery, RecordVersion, WebhookDelivery
from services.ingest.settings import IngestSettings
from shared.clock import FakeClock
from shared.db import make_engine
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import START, FakePublisher

pytestmark = pytest.mark.integration
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def ae(version: int, grade: int) -> dict[str, Any]:
    return {
        "id": f"ae-7-v{version}",
        "type": "ae",
        "study": "NCT07212335",
        "site": "SITE-1",
        "subject": "S-007",
        "data": {"ae_id": "AE-7", "version": version, "term": "Fever", "grade": grade},
    }


def post(client: TestClient, clock: FakeClock, document: Any, webhook_id: str) -> httpx.Response:
    body = json.dumps(document).encode()
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id, int(clock.now().timestamp()), body)
    return client.post("/v1/sources/edc/events", content=body, headers={**headers, "content-type": "application/json"})


def test_versions_forwards_only_and_webhook_ids_on_both_databases(database_url: str, tmp_path: Path) -> None:
    clock = FakeClock(START)
    publisher = FakePublisher()
    settings = IngestSettings(
        database_url=database_url, webhook_secrets={"edc": SECRET}, var_dir=tmp_path, background_jobs=False
    )
    app = create_app(settings, publisher=publisher, clock=clock, registry=CollectorRegistry(), env={})
    with TestClient(app) as client:
        assert post(client, clock, ae(2, 3), "wh-a").status_code == 202
        clock.advance(timedelta(minutes=5))
        older = post(client, clock, ae(1, 2), "wh-b")
        assert older.status_code == 200 and older.json()["stale"] == ["ae-7-v1"]
        assert post(client, clock, {"events": [ae(3, 4), ae(4, 4)]}, "wh-c").status_code == 202
        assert post(client, clock, ae(2, 3), "wh-a").json()["duplicates"] == ["ae-7-v2"]
        assert post(client, clock, ae(5, 5), "wh-a").status_code == 409
    assert len(publisher.messages) == 3
    engine = make_engine(database_url)
    with Session(engine) as session:
        [row] = session.exec(select(RecordVersion)).all()
        assert row.source_version == "n00000000000000000004" and row.canonical_version == 4
        assert row.first_received_at == START
        assert len(session.exec(select(AcceptedDelivery)).all()) == 3
        assert sorted(w.webhook_id for w in session.exec(select(WebhookDelivery)).all()) == ["wh-a", "wh-c"]
    engine.dispose()
