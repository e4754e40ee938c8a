"""The webhook endpoint as an EDC sees it: signatures, validation, durability before 2xx, idempotency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from shared.clock import FakeClock
from shared.events import CLINICAL_ADAPTER, AeReported, deterministic_id
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import webhook_id

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOPIC = "test.clinical.v1"
URL = "/v1/sources/edc/events"
PROBLEM = "application/problem+json"


@pytest.fixture
def settings(clean_env: None, tmp_path: Path) -> IngestSettings:
    return IngestSettings(webhook_secrets={"edc": SECRET}, var_dir=tmp_path, clinical_topic=TOPIC, max_body_bytes=2048)


@pytest.fixture
def client(settings: IngestSettings, publisher: FakePublisher, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings, publisher=publisher, clock=clock, registry=CollectorRegistry())
    with TestClient(app) as client:
        yield client


def ae_event(n: int = 1, **data: Any) -> dict[str, Any]:
    return {
        "id": f"msg-{n}",
        "type": "ae",
        "study": "NCT07212335",
        "site": "SITE-1",
        "subject": "S-007",
        "data": {"ae_id": f"AE-{n}", "version": 1, "term": "Fever", "grade": 3, **data},
    }


def post(
    client: TestClient, clock: FakeClock, document: Any, *, secret: str = SECRET, age: timedelta = timedelta(0)
) -> Any:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    sent_at = int((clock.now() - age).timestamp())
    headers = signature_headers(WebhookSecret.parse(secret), webhook_id(raw), sent_at, raw)
    return client.post(URL, content=raw, headers={**headers, "content-type": "application/json"})


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    return problem


def test_accepted_event_is_on_the_clinical_topic_keyed_by_subject(
    client: TestClient, clock: FakeClock, publisher: FakePublisher
) -> None:
    response = post(client, clock, ae_event())
    assert response.status_code == 202
    assert response.json() == {"accepted": ["msg-1"], "duplicates": [], "stale": [], "ignored": []}
    [(topic, key, value)] = publisher.messages
    assert topic == TOPIC
    assert key == b"NCT07212335:S-007"
    envelope = CLINICAL_ADAPTER.validate_json(value)
    assert isinstance(envelope, AeReported)
    assert envelope.id == deterministic_id("inbound", "edc", "msg-1")
    assert envelope.receivedat == clock.now()
    assert envelope.data.grade == 3


def test_second_identical_post_is_a_duplicate(client: TestClient, clock: FakeClock, publisher: FakePublisher) -> None:
    assert post(client, clock, ae_event()).status_code == 202
    clock.advance(timedelta(minutes=1))
    response = post(client, clock, ae_event())
    assert response.status_code == 200
    assert response.json() == {"accepted": [], "duplicates": ["msg-1"], "stale": [], "ignored": []}
    assert len(publisher.messages) == 1


def test_batch_with_one_known_id_publishes_only_the_new_one(
    client: TestClient, clock: FakeClock, publisher: FakePublisher
) -> None:
    post(client, clock, ae_event(1))
    response = post(client, clock, {"events": [ae_event(1), ae_event(2)]})
    assert response.status_code == 202
    assert response.json() == {"accepted": ["msg-2"], "duplicates": ["msg-1"], "stale": [], "ignored": []}
    assert len(publisher.messages) == 2


def test_bad_signature_is_401_and_nothing_is_published(
    client: TestClient, clock: FakeClock, publisher: FakePublisher
) -> None:
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    problem = assert_problem(post(client, clock, ae_event(), secret=other), 401)
    assert "signature" in problem["detail"]
    assert publisher.messages == []


def test_tampered_body_is_401(client: TestClient, clock: FakeClock, publisher: FakePublisher) -> None:
    raw = json.dumps(ae_event()).encode()
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id(raw), int(clock.now().timestamp()), raw)
    response = client.post(URL, content=raw.replace(b'"grade": 3', b'"grade": 4'), headers=headers)
    assert_problem(response, 401)
    assert publisher.messages == []


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-6)])
def test_stale_timestamp_is_401(client: TestClient, clock: FakeClock, publisher: FakePublisher, age: timedelta) -> None:
    problem = assert_problem(post(client, clock, ae_event(), age=age), 401)
    assert "replay window" in problem["detail"]
    assert publisher.messages == []


def test_missing_signature_headers_is_401(client: TestClient, publisher: FakePublisher) -> None:
    assert_problem(client.post(URL, json=ae_event()), 401)
    assert publisher.messages == []


def test_unknown_source_is_404(client: TestClient, clock: FakeClock) -> None:
    raw = json.dumps(ae_event()).encode()
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id(raw), int(clock.now().timestamp()), raw)
    problem = assert_problem(client.post("/v1/sources/rave/events", content=raw, headers=headers), 404)
    assert "rave" in problem["detail"]


def test_body_over_the_limit_is_413(client: TestClient, clock: FakeClock, publisher: FakePublisher) -> None:
    assert_problem(post(client, clock, ae_event(term="x" * 3000)), 413)
    assert publisher.messages == []


def test_streamed_body_over_the_limit_is_413_without_content_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b" " * 1000

    response = client.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


def test_invalid_field_is_422_naming_it(client: TestClient, clock: FakeClock, publisher: FakePublisher) -> None:
    problem = assert_problem(post(client, clock, {"events": [ae_event(1), ae_event(2, grade=7)]}), 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/events/1/data/grade"]
    assert "/events/1/data/grade" in problem["detail"]
    assert publisher.messages == []


def test_invalid_json_is_422(client: TestClient, clock: FakeClock) -> None:
    problem = assert_problem(post(client, clock, b"{oops"), 422)
    assert problem["errors"][0]["pointer"] == ""


def test_broker_down_is_503_with_retry_after_and_nothing_is_recorded(
    client: TestClient, clock: FakeClock, publisher: FakePublisher
) -> None:
    publisher.down = True
    response = post(client, clock, ae_event())
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "30"
    assert publisher.messages == []

    publisher.down = False
    retry = post(client, clock, ae_event())
    assert retry.status_code == 202, "the event was not accepted before, so the retry must not be a duplicate"
    assert retry.json()["accepted"] == ["msg-1"]
    assert len(publisher.messages) == 1


def test_health_readiness_and_metrics(client: TestClient, clock: FakeClock) -> None:
    post(client, clock, ae_event())
    assert client.get("/healthz").json() == {"status": "ok", "service": "ingest"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'sentinel_ingest_events_published_total{type="ae.reported"} 1.0' in metrics.text


def test_rejections_are_counted_by_reason(client: TestClient, clock: FakeClock) -> None:
    post(client, clock, ae_event(), age=timedelta(hours=1))
    post(client, clock, {"events": []})
    text = client.get("/metrics").text
    assert 'sentinel_ingest_requests_rejected_total{reason="signature"} 1.0' in text
    assert 'sentinel_ingest_requests_rejected_total{reason="invalid"} 1.0' in text


def test_placeholder_secret_is_refused_at_start(clean_env: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="source 'edc'"):
        IngestSettings(webhook_secrets={"edc": "whsec_c2hvcnQ="}, var_dir=tmp_path)


def test_secrets_come_from_the_environment(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_WEBHOOK_SECRETS", json.dumps({"redcap": SECRET}))
    assert set(IngestSettings().webhook_secrets) == {"redcap"}


def test_metrics_answers_on_the_contract_path_without_redirect(client: TestClient) -> None:
    response = client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert "sentinel_ingest_events_published" in response.text


def test_malformed_source_id_is_422_not_500(client: TestClient) -> None:
    problem = assert_problem(client.post("/v1/sources/bad%20id/events", content=b"{}"), 422)
    assert problem["errors"][0]["pointer"] == "/path/source_id"
