"""Ingest against the real broker: 202 only after the broker has the event; 503 when it cannot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.devstack.scenario import new_webhook_secret
from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from shared.events import CLINICAL_ADAPTER, AeReported
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.kafka_tools import read_topic_sync
from tests.polling import wait_for
from tests.unit.ingest.conftest import webhook_id

pytestmark = pytest.mark.integration
SECRET = new_webhook_secret()


def _ae_event(event_id: str) -> dict[str, object]:
    return {
        "id": event_id,
        "type": "ae",
        "study": "NCT07212335",
        "site": "101",
        "subject": "101-009",
        "data": {
            "ae_id": "AE-9",
            "version": 1,
            "term": "Pneumonia",
            "grade": 3,
            "seriousness": {"hospitalization": True},
            "awareness_at": "2026-11-20T08:30:00+01:00",
        },
    }


def _signed(body: bytes) -> dict[str, str]:
    now = int(datetime.now(UTC).timestamp())
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id(body), now, body)
    return {**headers, "content-type": "application/json"}


def _client(settings: IngestSettings) -> TestClient:
    return TestClient(create_app(settings, registry=CollectorRegistry()))


@pytest.fixture
def live_ingest(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    topic = f"{topic_prefix}.clinical"
    settings = IngestSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        clinical_topic=topic,
        webhook_secrets={"edc": SECRET},
        var_dir=tmp_path,
    )
    with _client(settings) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="ingest ready")
        yield client, topic


def test_accepted_event_is_on_the_topic_with_subject_key(
    live_ingest: tuple[TestClient, str], kafka_bootstrap: str
) -> None:
    client, topic = live_ingest
    body = json.dumps(_ae_event("evt-1")).encode()
    response = client.post("/v1/sources/edc/events", content=body, headers=_signed(body))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == ["evt-1"]

    records = read_topic_sync(kafka_bootstrap, topic, expect=1)
    assert len(records) == 1
    assert records[0].key == b"NCT07212335:101-009"
    envelope = CLINICAL_ADAPTER.validate_json(records[0].value)
    assert isinstance(envelope, AeReported)
    assert envelope.senderid == "evt-1"
    assert envelope.data.awareness_at == datetime(2026, 11, 20, 7, 30, tzinfo=UTC)

    again = client.post("/v1/sources/edc/events", content=body, headers=_signed(body))
    assert again.status_code == 200
    assert again.json() == {"accepted": [], "duplicates": ["evt-1"], "stale": [], "ignored": []}
    assert len(read_topic_sync(kafka_bootstrap, topic, expect=1)) == 1, "a duplicate must not be published again"


def test_unreachable_broker_answers_503_with_retry_after(tmp_path: Path) -> None:
    settings = IngestSettings(
        kafka_bootstrap_servers="127.0.0.1:9",  # nothing listens on the discard port
        webhook_secrets={"edc": SECRET},
        var_dir=tmp_path,
        publish_timeout_seconds=2,
    )
    with _client(settings) as client:
        assert client.get("/readyz").status_code == 503
        body = json.dumps(_ae_event("evt-2")).encode()
        response = client.post("/v1/sources/edc/events", content=body, headers=_signed(body))
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) > 0
        assert "retry" in response.json()["detail"]
