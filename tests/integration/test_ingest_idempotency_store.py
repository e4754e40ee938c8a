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
from fastapi import FastAPI
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


def ingest(database_url: str, tmp_path: Path, clock: FakeClock, publisher: FakePublisher) -> FastAPI:
    settings = IngestSettings(
        database_url=database_url, webhook_secrets={"edc": SECRET}, var_dir=tmp_path, background_jobs=False
    )
    return create_app(settings, publisher=publisher, clock=clock, registry=CollectorRegistry(), env={})


def test_versions_forwards_only_and_webhook_ids_on_both_databases(database_url: str, tmp_path: Path) -> None:
    clock, publisher = FakeClock(START), FakePublisher()
    with TestClient(ingest(database_url, tmp_path, clock, publisher)) as client:
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


def lab(event_id: str, result_id: str, value: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "lab",
        "study": "NCT07212335",
        "site": "SITE-1",
        "subject": "S-007",
        "data": {
            "result_id": result_id,
            "test": "PLAT",
            "value": value,
            "unit": "10^9/L",
            "collected_at": "2026-01-02T08:00:00Z",
        },
    }


def test_a_record_with_a_delivery_id_and_no_version_keeps_no_version_row(database_url: str, tmp_path: Path) -> None:
    """Such a record is judged by its delivery id alone: it gets no `ingest_record_versions` row (nothing read
    one), resends are still duplicates, its corrections are still published, and an AE beside it is still numbered
    and ordered by its row."""
    clock, publisher = FakeClock(START), FakePublisher()
    with TestClient(ingest(database_url, tmp_path, clock, publisher)) as client:
        first = post(client, clock, {"events": [lab("lab-1", "R-1", "40"), ae(2, 3)]}, "wh-1")
        assert first.status_code == 202 and first.json()["accepted"] == ["lab-1", "ae-7-v2"]
        resent = post(client, clock, lab("lab-1", "R-1", "40"), "wh-2")
        assert resent.status_code == 200 and resent.json()["duplicates"] == ["lab-1"]
        corrected = post(client, clock, lab("lab-1b", "R-1", "20"), "wh-3")
        assert corrected.status_code == 202 and corrected.json()["accepted"] == ["lab-1b"]
        assert post(client, clock, ae(1, 2), "wh-4").json()["stale"] == ["ae-7-v1"]
    assert [json.loads(value)["data"].get("value") for _, _, value in publisher.messages] == ["40", None, "20"]
    engine = make_engine(database_url)
    with Session(engine) as session:
        assert [row.record_key for row in session.exec(select(RecordVersion)).all()] == ["NCT07212335:S-007:ae:AE-7"]
        assert sorted(d.event_id for d in session.exec(select(AcceptedDelivery)).all()) == [
            "ae-7-v2",
            "lab-1",
            "lab-1b",
        ]
    engine.dispose()


def test_the_one_statement_lookup_reads_what_the_lookup_per_table_read(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's lookups are one UNION ALL statement when they fit one chunk; the chunked statements (one per
    table) stay for larger requests. Both must see the same delivery ids, versions and webhook body."""
    from services.ingest import store
    from services.ingest.main import MIGRATIONS
    from shared.schema_version import SHARED, prepare_database

    engine = make_engine(database_url)
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=True)
    updates = [
        store.VersionUpdate(
            f"k{n}", f"v{n}" if n % 2 else None, n or None, "lab", f"R{n}", "T", "S", "SITE", False, START
        )
        for n in range(4)
    ]
    write = store.AcceptedWrite(
        source_id="edc",
        envelopes=[],
        updates=updates,
        now=START,
        webhook_id="wh-1",
        webhook_body_sha256="ab" * 32,
    )
    with engine.begin() as connection:
        store.save_accepted(connection, writes=[write])
        connection.exec_driver_sql(
            "INSERT INTO ingest_accepted (source_id, event_id, envelope_id, event_type, accepted_at)"
            " VALUES ('edc', 'e1', 'x', 'lab.resulted', '2026-01-01 00:00:00'),"
            " ('edc', 'e2', 'x', 'lab.resulted', '2026-01-01 00:00:00'),"
            " ('other', 'e3', 'x', 'lab.resulted', '2026-01-01 00:00:00')"
        )
        # ingest_webhook_deliveries gets its row only with envelopes: write it as the request would have
        connection.exec_driver_sql(
            "INSERT INTO ingest_webhook_deliveries (source_id, webhook_id, body_sha256, accepted_at)"
            " VALUES ('edc', 'wh-1', '" + "ab" * 32 + "', '2026-01-01 00:00:00')"
        )
    shapes: list[dict[str, Any]] = [
        {"event_ids": ["e1"], "record_keys": ["k1"], "webhook_id": "wh-1"},
        {
            "event_ids": ["e1", "e2", "e3", "e9", "e1"],
            "record_keys": ["k0", "k1", "k2", "k3", "k9"],
            "webhook_id": None,
        },
        {"event_ids": [], "record_keys": ["k2"], "webhook_id": "wh-2"},
        {"event_ids": ["e2"], "record_keys": [], "webhook_id": None},
        {"event_ids": [], "record_keys": [], "webhook_id": None},
    ]

    def read(shape: dict[str, Any]) -> store.Known:
        return store.read_known(
            engine,
            source_id="edc",
            event_ids=shape["event_ids"],
            record_keys=shape["record_keys"],
            webhook_id=shape.get("webhook_id"),
        )

    at_once = [read(shape) for shape in shapes]
    monkeypatch.setattr(store, "CHUNK", 0)  # nothing fits "one chunk" now: the statement per table
    per_table = [read(shape) for shape in shapes]
    engine.dispose()
    assert at_once == per_table
    first, second = at_once[0], at_once[1]
    assert first.deliveries == {"e1"} and first.webhook_body_sha256 == "ab" * 32
    assert first.versions == {"k1": store.KnownVersion("v1", 1, None, START)}
    assert second.deliveries == {"e1", "e2"}, "another source's delivery ids are not this one's"
    assert set(second.versions) == {"k0", "k1", "k2", "k3"} and second.versions["k0"].canonical_version is None
