"""Defects found by the fault-injection run (issue 15), each reproduced as an EDC or an operator would meet it.

- what ingest accepts, safety can process: numbers bounded, every source bound to the protocol's trial;
- the database down is an outage (503 + Retry-After, /readyz not ready), never a 500;
- no secret in a start-up error;
- the same webhook-id with another body is refused (409), the same body is a resend.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from services.ingest.sources import SourcesError
from services.notify.settings import NotifySettings
from shared.clock import FakeClock
from shared.settings import ApiSettings
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import AppFactory

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_c2Vjb25kLXNvdXJjZS1zZWNyZXQtMDEyMzQ1"
URL = "/v1/sources/edc/events"
PROBLEM = "application/problem+json"


@pytest.fixture
def client(clean_env: None, tmp_path: Path, publisher: FakePublisher, clock: FakeClock) -> Iterator[TestClient]:
    settings = IngestSettings(
        webhook_secrets={"edc": SECRET}, var_dir=tmp_path / "db", clinical_topic="t.clinical", background_jobs=False
    )
    with TestClient(create_app(settings, publisher=publisher, clock=clock, registry=CollectorRegistry())) as client:
        yield client


def lab(n: int = 1, study: str = "NCT07212335", **data: Any) -> dict[str, Any]:
    return {
        "id": f"lab-{n}",
        "type": "lab",
        "study": study,
        "site": "SITE-1",
        "subject": "S-007",
        "data": {
            "result_id": f"R-{n}",
            "test": "NEUT",
            "value": "0.4",
            "unit": "10^9/L",
            "lln": "1.8",
            "uln": "7.5",
            "collected_at": "2026-02-28T08:00:00Z",
            **data,
        },
    }


def post(client: TestClient, clock: FakeClock, raw: bytes, *, webhook_id: str = "wh-1") -> Any:
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id, int(clock.now().timestamp()), raw)
    return client.post(URL, content=raw, headers={**headers, "content-type": "application/json"})


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    return body


# --- 1. accepted, then dead-lettered ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw_number"),
    [
        ("uln", "1e999999"),
        ("lln", "-1e999999"),
        ("value", "1e999999"),
        ("uln", "0.12345678901234567890123"),
        ("lln", "1e-40"),
    ],
)
def test_a_number_no_lab_can_have_is_422_naming_the_field(
    client: TestClient, clock: FakeClock, publisher: FakePublisher, field: str, raw_number: str
) -> None:
    body = json.dumps(lab()).replace(f'"{field}": "{lab()["data"][field]}"', f'"{field}": {raw_number}').encode()
    assert raw_number.encode() in body
    found = problem(post(client, clock, body), 422)
    assert [e["pointer"] for e in found["errors"]] == [f"/data/{field}"]
    assert publisher.messages == []


def test_censored_text_with_an_absurd_number_is_refused_too(client: TestClient, clock: FakeClock) -> None:
    found = problem(post(client, clock, json.dumps(lab(value="<1e999999")).encode()), 422)
    assert found["errors"][0]["pointer"] == "/data/value"


def test_real_lab_numbers_still_pass(client: TestClient, clock: FakeClock) -> None:
    event = lab(value="<0.2", lln="0.000001", uln="450000000000")
    assert post(client, clock, json.dumps(event).encode()).status_code == 202


def test_an_env_configured_source_is_bound_to_the_protocols_trial(client: TestClient, clock: FakeClock) -> None:
    found = problem(post(client, clock, json.dumps(lab(study="NCT99999999")).encode()), 422)
    assert found["errors"][0]["pointer"] == "/study"
    assert "NCT07212335" in found["errors"][0]["detail"]


def test_a_source_configured_for_another_trial_is_refused_at_start(make_client: AppFactory) -> None:
    sources = {"sources": {"edc": {"kind": "canonical", "trial": "NCT99999999", "auth": {"secret": SECRET}}}}
    with pytest.raises(SourcesError, match=r"sources\.edc\.trial"):
        make_client(sources)


def test_adapter_records_are_bounded_too(make_client: AppFactory, clock: FakeClock) -> None:
    token = "sdtm-token-0123456789abcdef"
    client = make_client({"sources": {"sd": {"kind": "sdtm", "auth": {"scheme": "bearer", "secret": token}}}})
    csv = (
        "STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBORRES,LBORRESU,LBORNRLO,LBORNRHI,LBDTC\n"
        "NCT07212335,LB,101-001,1,PLAT,1e999999,10^9/L,150,400,2026-01-21T08:00:00Z\n"
    )
    response = client.post(
        "/v1/sources/sd/sdtm", content=csv, headers={"authorization": f"Bearer {token}", "content-type": "text/csv"}
    )
    found = problem(response, 422)
    assert found["errors"][0]["pointer"].endswith("/data/value")


# --- 3. database down --------------------------------------------------------------------------------------


def test_database_gone_is_503_with_retry_after_and_not_ready(
    client: TestClient, clock: FakeClock, tmp_path: Path
) -> None:
    assert client.get("/readyz").json()["checks"]["database"] is True
    client.app.state.runtime.engine.dispose()  # type: ignore[attr-defined]
    shutil.rmtree(tmp_path / "db")  # SQLite cannot open its file any more: sqlite3.OperationalError
    response = post(client, clock, json.dumps(lab()).encode())
    found = problem(response, 503)
    assert response.headers["retry-after"] == "30"
    assert found["title"] == "Database unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"] is False


# --- 6. secrets in start-up errors ---------------------------------------------------------------------------


def test_a_bad_api_token_entry_never_prints_the_token(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("SENTINEL_API_TOKENS", json.dumps({token: {"user": "olga", "role": "superuser"}}))
    with pytest.raises(ValidationError) as caught:
        ApiSettings()
    message = str(caught.value)
    assert token not in message
    assert "olga" in message and "role" in message


def test_a_bad_webhook_secret_never_prints_any_secret(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_WEBHOOK_SECRETS", json.dumps({"good": OTHER_SECRET, "bad": "whsec_c2hvcnQ="}))
    with pytest.raises(ValidationError) as caught:
        IngestSettings()
    message = str(caught.value)
    assert OTHER_SECRET not in message and "c2hvcnQ" not in message
    assert "'bad'" in message


def test_settings_and_sources_never_show_a_secret(clean_env: None, client: TestClient) -> None:
    settings = IngestSettings(webhook_secrets={"edc": SECRET})
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert SECRET not in repr(runtime.sources) and "MfKQ9r8" not in repr(runtime.sources)
    token = "tok-0123456789abcdef01"
    api = ApiSettings(api_tokens={token: {"user": "olga", "role": "officer"}})
    assert token not in repr(api) and token not in str(api.model_dump())
    notify = NotifySettings(smtp_password="hunter2-smtp-password")
    assert "hunter2" not in repr(notify)


# --- 7. same webhook-id, different body ---------------------------------------------------------------------


def test_same_webhook_id_with_another_body_is_409_and_publishes_nothing(
    client: TestClient, clock: FakeClock, publisher: FakePublisher
) -> None:
    assert post(client, clock, json.dumps(lab(1)).encode(), webhook_id="wh-42").status_code == 202
    response = post(client, clock, json.dumps(lab(2)).encode(), webhook_id="wh-42")
    found = problem(response, 409)
    assert "wh-42" in found["detail"]
    assert len(publisher.messages) == 1


def test_a_resend_under_the_same_webhook_id_is_the_duplicate_it_claims_to_be(
    client: TestClient, clock: FakeClock, publisher: FakePublisher
) -> None:
    body = json.dumps(lab(1)).encode()
    assert post(client, clock, body, webhook_id="wh-7").status_code == 202
    again = post(client, clock, body, webhook_id="wh-7")
    assert again.status_code == 200 and again.json()["duplicates"] == ["lab-1"]
    assert post(client, clock, json.dumps(lab(2)).encode(), webhook_id="wh-8").status_code == 202
    assert len(publisher.messages) == 2
