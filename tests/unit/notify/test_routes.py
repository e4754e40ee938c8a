"""The officer API as a safety officer uses it: list, read, acknowledge, record the filed report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session

from services.notify.main import create_app
from services.notify.settings import NotifySettings
from services.notify.signals import apply_signal
from shared.clock import FakeClock
from shared.protocol import load_protocol
from tests.unit.conftest import FakeChannel

OFFICER = "officer-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
AWARE = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
PROBLEM = "application/problem+json"


@pytest.fixture
def app(clean_env: None, tmp_path: Path, clock: FakeClock) -> FastAPI:
    settings = NotifySettings(
        var_dir=tmp_path,
        api_tokens={
            OFFICER: {"user": "dr.officer", "role": "officer"},
            VIEWER: {"user": "viewer", "role": "viewer"},
        },
    )
    return create_app(settings, clock=clock, registry=CollectorRegistry(), channel=FakeChannel())


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    # Not entered as a context manager: the lifespan (Kafka consumer, dispatcher) never starts, no sockets.
    return TestClient(app)


def seed(app: FastAPI, signal: Any, now: datetime | None = None) -> None:
    runtime = app.state.runtime
    with Session(runtime.engine) as session, session.begin():
        apply_signal(session, signal, now or runtime.clock.now(), protocol=load_protocol(None))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def only_alert(client: TestClient) -> dict[str, Any]:
    [alert] = client.get("/v1/alerts", headers=auth(VIEWER)).json()
    return alert


def test_lifespan_is_not_started(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "service": "notify"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"broker": False, "consumer": False, "dead_letters": False, "database": True}
    assert client.get("/metrics", follow_redirects=False).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope-not-a-token"}, {"Authorization": OFFICER}])
def test_without_a_valid_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/v1/alerts", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"


def test_viewer_cannot_acknowledge(app: FastAPI, client: TestClient, make_sae: Any) -> None:
    seed(app, make_sae())
    alert = only_alert(client)
    response = client.post(f"/v1/alerts/{alert['id']}/ack", headers=auth(VIEWER))
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert client.get(f"/v1/alerts/{alert['id']}", headers=auth(VIEWER)).json()["state"] == "open"


def test_officer_acknowledges_with_history(app: FastAPI, client: TestClient, clock: FakeClock, make_sae: Any) -> None:
    seed(app, make_sae())
    alert = only_alert(client)
    clock.advance(timedelta(minutes=20))
    response = client.post(f"/v1/alerts/{alert['id']}/ack", headers=auth(OFFICER), json={"comment": "on it"})
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "acknowledged"
    assert body["acknowledged_by"] == "dr.officer"
    assert datetime.fromisoformat(body["acknowledged_at"]) == clock.now()
    last = body["history"][-1]
    assert (last["actor"], last["action"], last["detail"]) == ("dr.officer", "acknowledged", "acknowledged: on it")
    assert body["obligations"][0]["state"] == "open", "acknowledging does not close the obligation"
    assert len(body["deliveries"]) == 2


def test_unknown_alert_is_404(client: TestClient) -> None:
    assert client.get("/v1/alerts/nope", headers=auth(VIEWER)).status_code == 404
    assert client.post("/v1/alerts/nope/ack", headers=auth(OFFICER)).status_code == 404


def test_complete_obligation_is_idempotent_by_reference(
    app: FastAPI, client: TestClient, clock: FakeClock, make_sae: Any
) -> None:
    seed(app, make_sae(awareness_at=AWARE))
    [obligation] = client.get("/v1/obligations", headers=auth(VIEWER)).json()
    url = f"/v1/obligations/{obligation['id']}/complete"

    assert client.post(url, headers=auth(VIEWER), json={"reference": "MW-1"}).status_code == 403
    done = client.post(url, headers=auth(OFFICER), json={"reference": "MW-1"})
    assert done.status_code == 200
    body = done.json()
    assert (body["state"], body["reference"], body["completed_by"]) == ("completed", "MW-1", "dr.officer")
    assert body["seconds_left"] is None

    clock.advance(timedelta(minutes=5))
    again = client.post(url, headers=auth(OFFICER), json={"reference": "MW-1"})
    assert again.status_code == 200
    assert again.json()["completed_at"] == body["completed_at"]

    conflict = client.post(url, headers=auth(OFFICER), json={"reference": "MW-2"})
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == PROBLEM
    assert "MW-1" in conflict.json()["detail"]

    alert = client.get(f"/v1/alerts/{obligation['alert_id']}", headers=auth(VIEWER)).json()
    assert [h["action"] for h in alert["history"]].count("report_filed") == 1


def test_complete_needs_a_reference(app: FastAPI, client: TestClient, make_sae: Any) -> None:
    seed(app, make_sae())
    [obligation] = client.get("/v1/obligations", headers=auth(VIEWER)).json()
    response = client.post(f"/v1/obligations/{obligation['id']}/complete", headers=auth(OFFICER), json={})
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "/body/reference"


def test_unknown_obligation_is_404(client: TestClient) -> None:
    response = client.post("/v1/obligations/nope/complete", headers=auth(OFFICER), json={"reference": "X"})
    assert response.status_code == 404


def test_obligation_becomes_overdue_when_the_clock_passes_due(
    app: FastAPI, client: TestClient, clock: FakeClock, make_sae: Any
) -> None:
    clock.set(AWARE + timedelta(hours=1))
    seed(app, make_sae(awareness_at=AWARE))
    [obligation] = client.get("/v1/obligations", headers=auth(VIEWER)).json()
    assert obligation["state"] == "open"
    assert obligation["seconds_left"] == 23 * 3600

    clock.set(AWARE + timedelta(hours=24))
    [at_deadline] = client.get("/v1/obligations", headers=auth(VIEWER), params={"state": "open"}).json()
    assert at_deadline["state"] == "open"

    clock.set(AWARE + timedelta(hours=24, seconds=1))
    assert client.get("/v1/obligations", headers=auth(VIEWER), params={"state": "open"}).json() == []
    [overdue] = client.get("/v1/obligations", headers=auth(VIEWER), params={"state": "overdue"}).json()
    assert overdue["state"] == "overdue"
    assert overdue["seconds_left"] == -1

    late = client.post(f"/v1/obligations/{overdue['id']}/complete", headers=auth(OFFICER), json={"reference": "R"})
    assert late.json()["state"] == "completed"
    alert = client.get(f"/v1/alerts/{overdue['alert_id']}", headers=auth(VIEWER)).json()
    assert "after the deadline" in alert["history"][-1]["detail"]


def test_filters(app: FastAPI, client: TestClient, make_sae: Any) -> None:
    seed(app, make_sae(signal_id="s1", subject_id="S-001", ae_id="AE-1", awareness_at=AWARE))
    seed(app, make_sae(signal_id="s2", subject_id="S-002", ae_id="AE-9", awareness_at=AWARE + timedelta(hours=6)))
    viewer = auth(VIEWER)

    def alerts(**params: str) -> list[str]:
        return sorted(a["subject_id"] for a in client.get("/v1/alerts", headers=viewer, params=params).json())

    def obligations(**params: str) -> list[str]:
        return [o["subject_id"] for o in client.get("/v1/obligations", headers=viewer, params=params).json()]

    assert alerts() == ["S-001", "S-002"]
    assert alerts(subject="S-002") == ["S-002"]
    assert alerts(trial="NCT07212335") == ["S-001", "S-002"]
    assert alerts(trial="NCT00000000") == []
    first = client.get("/v1/alerts", headers=viewer, params={"subject": "S-001"}).json()[0]
    client.post(f"/v1/alerts/{first['id']}/ack", headers=auth(OFFICER))
    assert alerts(state="acknowledged") == ["S-001"]
    assert alerts(state="open") == ["S-002"]

    assert obligations() == ["S-001", "S-002"], "ordered by deadline"
    assert obligations(subject="S-001") == ["S-001"]
    assert obligations(due_before="2026-03-02T08:00:00Z") == ["S-001"]
    # The same instant written with an offset: 2026-03-02T08:00Z == 13:30+05:30.
    assert obligations(due_before="2026-03-02T13:30:00+05:30") == ["S-001"]
    assert obligations(due_before="2026-03-02T12:00:01Z") == ["S-001", "S-002"]
    assert obligations(state="completed") == []


def test_naive_due_before_is_refused(client: TestClient) -> None:
    response = client.get("/v1/obligations", headers=auth(VIEWER), params={"due_before": "2026-03-02T08:00:00"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "/query/due_before"


def test_obligation_times_are_served_in_utc(app: FastAPI, client: TestClient, make_sae: Any) -> None:
    seed(app, make_sae(awareness_at=datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))))
    [obligation] = client.get("/v1/obligations", headers=auth(VIEWER)).json()
    assert datetime.fromisoformat(obligation["due_at"]) == datetime(2026, 3, 2, 4, 30, tzinfo=UTC)
    assert obligation["clock_basis"] == "site"


def test_short_api_token_is_refused_at_start(clean_env: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        NotifySettings(var_dir=tmp_path, api_tokens={"changeme": {"user": "x", "role": "admin"}})


ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def admin_app(clean_env: None, tmp_path: Path, clock: FakeClock) -> FastAPI:
    settings = NotifySettings(
        var_dir=tmp_path,
        api_tokens={
            OFFICER: {"user": "dr.officer", "role": "officer"},
            VIEWER: {"user": "viewer", "role": "viewer"},
            ADMIN: {"user": "root", "role": "admin"},
        },
    )
    return create_app(settings, clock=clock, registry=CollectorRegistry(), channel=FakeChannel())


def test_comment_is_in_the_history_and_needs_an_officer(app: FastAPI, client: TestClient, make_sae: Any) -> None:
    seed(app, make_sae())
    url = f"/v1/alerts/{only_alert(client)['id']}/comments"
    assert client.post(url, json={"text": "calling the site"}).status_code == 401
    assert client.post(url, headers=auth(VIEWER), json={"text": "calling the site"}).status_code == 403
    response = client.post(url, headers=auth(OFFICER), json={"text": "calling the site"})
    assert response.status_code == 201
    last = response.json()["history"][-1]
    assert (last["actor"], last["action"], last["detail"]) == ("dr.officer", "commented", "calling the site")
    assert client.post(url, headers=auth(OFFICER), json={"text": ""}).status_code == 422


def test_snooze_needs_reason_and_future_expiry(
    app: FastAPI, client: TestClient, clock: FakeClock, make_sae: Any
) -> None:
    seed(app, make_sae(awareness_at=AWARE))
    url = f"/v1/alerts/{only_alert(client)['id']}/snooze"
    until = (clock.now() + timedelta(hours=2)).isoformat()
    assert client.post(url, headers=auth(VIEWER), json={"reason": "r", "until": until}).status_code == 403
    missing = client.post(url, headers=auth(OFFICER), json={"until": until})
    assert missing.status_code == 422 and missing.json()["errors"][0]["pointer"] == "/body/reason"
    assert client.post(url, headers=auth(OFFICER), json={"reason": "r"}).status_code == 422
    past = client.post(url, headers=auth(OFFICER), json={"reason": "r", "until": clock.now().isoformat()})
    assert past.status_code == 422 and past.headers["content-type"] == PROBLEM
    ok = client.post(url, headers=auth(OFFICER), json={"reason": "in clinic", "until": until})
    assert ok.status_code == 200
    body = ok.json()
    assert datetime.fromisoformat(body["snoozed_until"]) == clock.now() + timedelta(hours=2)
    assert "reminders and overdue pages for SAE report continue" in body["history"][-1]["detail"]
    kinds = sorted({t["kind"] for t in body["scheduled"]})
    assert kinds == ["escalate", "overdue", "reminder"], "the snooze leaves every timer in place"


def test_cancel_is_for_admins_with_a_reason(admin_app: FastAPI, make_sae: Any) -> None:
    client = TestClient(admin_app)
    seed(admin_app, make_sae())
    [obligation] = client.get("/v1/obligations", headers=auth(VIEWER)).json()
    url = f"/v1/obligations/{obligation['id']}/cancel"
    assert client.post(url, headers=auth(OFFICER), json={"reason": "entered in error"}).status_code == 403
    assert client.post(url, headers=auth(ADMIN), json={}).status_code == 422
    done = client.post(url, headers=auth(ADMIN), json={"reason": "AE entered in error at the site"})
    assert done.status_code == 200
    assert (done.json()["state"], done.json()["cancelled_by"]) == ("cancelled", "root")
    again = client.post(f"/v1/obligations/{obligation['id']}/complete", headers=auth(OFFICER), json={"reference": "X"})
    assert again.status_code == 409
    alert = client.get(f"/v1/alerts/{obligation['alert_id']}", headers=auth(VIEWER)).json()
    assert alert["state"] == "resolved" and alert["scheduled"] == []
    assert [a["id"] for a in client.get("/v1/alerts", headers=auth(VIEWER), params={"state": "resolved"}).json()] == [
        alert["id"]
    ]


def test_alerts_filter_by_an_open_obligation_due_before(app: FastAPI, client: TestClient, make_sae: Any) -> None:
    seed(app, make_sae(signal_id="s1", subject_id="S-001", ae_id="AE-1", awareness_at=AWARE))
    seed(app, make_sae(signal_id="s2", subject_id="S-002", ae_id="AE-9", awareness_at=AWARE + timedelta(hours=6)))

    def subjects(**params: str) -> list[str]:
        return sorted(a["subject_id"] for a in client.get("/v1/alerts", headers=auth(VIEWER), params=params).json())

    assert subjects(due_before="2026-03-02T08:00:00Z") == ["S-001"]
    assert subjects(due_before="2026-03-03T00:00:00Z") == ["S-001", "S-002"]
    [first] = client.get("/v1/obligations", headers=auth(VIEWER), params={"subject": "S-001"}).json()
    client.post(f"/v1/obligations/{first['id']}/complete", headers=auth(OFFICER), json={"reference": "R-1"})
    assert subjects(due_before="2026-03-03T00:00:00Z") == ["S-002"], "a completed obligation is no longer due"


def test_acknowledge_and_complete_feed_the_response_histograms(
    clean_env: None, tmp_path: Path, clock: FakeClock, make_sae: Any
) -> None:
    registry = CollectorRegistry()
    settings = NotifySettings(var_dir=tmp_path, api_tokens={OFFICER: {"user": "dr.officer", "role": "officer"}})
    app = create_app(settings, clock=clock, registry=registry, channel=FakeChannel())
    client = TestClient(app)
    seed(app, make_sae(awareness_at=clock.now()))
    [alert] = client.get("/v1/alerts", headers=auth(OFFICER)).json()
    clock.advance(timedelta(minutes=12))
    client.post(f"/v1/alerts/{alert['id']}/ack", headers=auth(OFFICER))
    clock.advance(timedelta(hours=3))
    client.post(
        f"/v1/obligations/{alert['obligations'][0]['id']}/complete", headers=auth(OFFICER), json={"reference": "R"}
    )
    sample = registry.get_sample_value
    assert sample("sentinel_notify_time_to_acknowledge_seconds_sum", {"kind": "sae"}) == 12 * 60
    assert sample("sentinel_notify_time_to_acknowledge_seconds_bucket", {"kind": "sae", "le": "900.0"}) == 1
    assert sample("sentinel_notify_time_to_complete_seconds_sum", {"kind": "sae_report"}) == 3 * 3600 + 12 * 60
    metrics = client.get("/metrics").text
    assert 'sentinel_notify_alerts_open{kind="sae",trial="NCT07212335"}' not in metrics, "resolved"
    assert "sentinel_notify_obligations" in metrics


def test_unconfigured_webhook_target_refuses_to_start(clean_env: None, tmp_path: Path) -> None:
    protocol = load_protocol(None).model_dump(mode="json")
    protocol["escalation"]["steps"][0]["targets"] = ["safety_officer", "webhook:safety-chat"]
    path = tmp_path / "protocol.yaml"
    import yaml

    path.write_text(yaml.safe_dump(protocol))
    with pytest.raises(ValueError, match="safety-chat"):
        create_app(NotifySettings(var_dir=tmp_path, protocol_path=path), channel=FakeChannel())
    secret = "whsec_" + "c2VudGluZWwtdGVzdC1zZWNyZXQtMzItYnl0ZXMhIQ=="
    hooks = {"safety-chat": {"url": "https://chat.example/hook", "secret": secret, "format": "teams"}}
    create_app(NotifySettings(var_dir=tmp_path, protocol_path=path, chat_webhooks=hooks), channel=FakeChannel())
    with pytest.raises(ValueError, match="too short"):
        NotifySettings(chat_webhooks={"x": {"url": "https://chat.example/hook", "secret": "whsec_c2hvcnQ="}})
