"""Safety's DLT and cohort API: officers confirm or reject (audited, signalled); viewers read cohorts, DLTs
and the subject's DLT window."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session, col, select

from services.safety.main import create_app
from services.safety.protocol_engine import dlt_id_for
from services.safety.settings import SafetySettings
from shared.audit import AuditEntry, verify_chain
from shared.clock import FakeClock
from shared.events import SIGNAL_ADAPTER, CohortDecision, DltDecided
from shared.outbox import OutboxMessage
from tests.unit.safety.clinical import Driver, ae, dose, enrol

VIEWER = "viewer-token-0123456789abcdef"
OFFICER = "officer-token-0123456789abcdef"
TRIAL = "NCT07212335"
NOW = datetime(2026, 3, 12, 9, tzinfo=UTC)
DLT = dlt_id_for(TRIAL, "A-1", "AE-1")


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def client(tmp_path: Path, clean_env: None) -> TestClient:
    settings = SafetySettings(
        var_dir=tmp_path,
        api_tokens={VIEWER: {"user": "vera", "role": "viewer"}, OFFICER: {"user": "olga", "role": "officer"}},
    )
    app = create_app(settings, clock=FakeClock(NOW), registry=CollectorRegistry())
    driver = Driver(app.state.engine, app.state.protocol)
    for subject in ("A-1", "A-2", "A-3"):
        driver.apply_all([enrol(subject, "A", date(2026, 3, 2)), dose(subject, datetime(2026, 3, 2, 10, tzinfo=UTC))])
    driver.apply(ae("A-1", onset="2026-03-10", relatedness="probable"))
    return TestClient(app)  # no lifespan: no broker needed


def outbox(client: TestClient) -> list[object]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq))).all()
        return [SIGNAL_ADAPTER.validate_json(row.value) for row in rows]


def audit(client: TestClient) -> list[AuditEntry]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        return list(session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))).all())


def test_confirm_needs_an_officer_and_a_reason(client: TestClient) -> None:
    url = f"/v1/dlts/{DLT}/confirm"
    assert client.post(url, json={"reason": "x"}).status_code == 401
    assert client.post(url, json={"reason": "x"}, headers=auth("wrong-token-0123456789")).status_code == 401
    forbidden = client.post(url, json={"reason": "x"}, headers=auth(VIEWER))
    assert forbidden.status_code == 403 and "officer" in forbidden.json()["detail"]
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        missing = client.post(url, json=body, headers=auth(OFFICER))
        assert missing.status_code == 422, body
        assert missing.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/v1/trials/{TRIAL}/dlts", headers=auth(VIEWER)).json()[0]["state"] == "suspected"


def test_confirm_records_the_decision_audits_it_and_signals_it(client: TestClient) -> None:
    before = len(outbox(client))
    response = client.post(
        f"/v1/dlts/{DLT}/confirm", json={"reason": "pneumonitis, CT confirmed"}, headers=auth(OFFICER)
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["decided_by"], body["decision_reason"]) == (
        "confirmed",
        "olga",
        "pneumonitis, CT confirmed",
    )
    new = outbox(client)[before:]
    decided = [s for s in new if isinstance(s, DltDecided)]
    assert len(decided) == 1 and decided[0].data.decision == "confirmed" and decided[0].data.decided_by == "olga"
    assert decided[0].data.decided_at == NOW
    assert [s.data.decision for s in new if isinstance(s, CohortDecision)] == ["expand"]
    [entry] = [e for e in audit(client) if e.action == "dlt.confirmed"]
    assert (entry.actor, entry.entity, entry.detail["reason"]) == ("olga", f"dlt/{DLT}", "pneumonitis, CT confirmed")
    assert entry.detail["previous_state"] == "suspected"
    count, problems = verify_chain(client.app.state.engine, service="safety")  # type: ignore[attr-defined]
    assert count == len(audit(client)) and problems == []


def test_the_same_decision_again_is_harmless_and_a_different_one_conflicts(client: TestClient) -> None:
    client.post(f"/v1/dlts/{DLT}/reject", json={"reason": "pre-existing"}, headers=auth(OFFICER))
    rows, signals = len(audit(client)), len(outbox(client))
    again = client.post(f"/v1/dlts/{DLT}/reject", json={"reason": "still pre-existing"}, headers=auth(OFFICER))
    assert again.status_code == 200 and again.json()["decision_reason"] == "pre-existing"
    conflict = client.post(f"/v1/dlts/{DLT}/confirm", json={"reason": "changed my mind"}, headers=auth(OFFICER))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"].startswith("application/problem+json")
    assert conflict.json()["state"] == "rejected" and "olga" in conflict.json()["detail"]
    assert (len(audit(client)), len(outbox(client))) == (rows, signals)


def cohort_a(client: TestClient) -> dict[str, object]:
    arms: list[dict[str, object]] = client.get(f"/v1/trials/{TRIAL}/cohorts", headers=auth(VIEWER)).json()
    return arms[0]


def test_a_decision_is_revised_only_when_the_officer_names_the_decision_it_reverses(client: TestClient) -> None:
    url = f"/v1/dlts/{DLT}"
    client.post(f"{url}/confirm", json={"reason": "pneumonitis, CT confirmed"}, headers=auth(OFFICER))
    assert (cohort_a(client)["decision"], cohort_a(client)["dlt_confirmed"]) == ("expand", 1)
    rows, signals = len(audit(client)), len(outbox(client))
    for named in ({}, {"expected_state": "suspected"}, {"expected_state": "rejected"}):
        refused = client.post(f"{url}/reject", json={"reason": "SRC: infection", **named}, headers=auth(OFFICER))
        assert refused.status_code == 409, named
        assert refused.json()["state"] == "confirmed" and '"expected_state": "confirmed"' in refused.json()["detail"]
    assert (len(audit(client)), len(outbox(client))) == (rows, signals), "a refused revision changes nothing"

    body = {"reason": "SRC re-adjudicated: CMV pneumonitis, not drug related", "expected_state": "confirmed"}
    revised = client.post(f"{url}/reject", json=body, headers=auth(OFFICER))
    assert revised.status_code == 200
    assert (revised.json()["state"], revised.json()["decision_reason"]) == ("rejected", body["reason"])
    arm = cohort_a(client)
    assert (arm["dlt_confirmed"], arm["dlt_suspected"]) == (0, 0)
    assert arm["decision"] != "expand", "the arm's 3+3 is reassessed from the revised outcome"
    new = outbox(client)[signals:]
    [decided] = [s for s in new if isinstance(s, DltDecided)]
    assert (decided.data.decision, decided.data.revises) == ("rejected", "confirmed")
    assert decided.data.reason == body["reason"]
    assert [s.data.decision for s in new if isinstance(s, CohortDecision)] == [arm["decision"]]
    [entry] = [e for e in audit(client) if e.action == "dlt.revised"]
    assert entry.detail["previous_state"] == "confirmed" and entry.detail["decision"] == "rejected"
    assert entry.detail["revises"] == {
        "decision": "confirmed",
        "decided_by": "olga",
        "decided_at": NOW.isoformat(),
        "reason": "pneumonitis, CT confirmed",
    }
    count, problems = verify_chain(client.app.state.engine, service="safety")  # type: ignore[attr-defined]
    assert count == len(audit(client)) and problems == []

    again = client.post(f"{url}/reject", json=body, headers=auth(OFFICER))
    assert again.status_code == 200 and len(outbox(client)) == signals + len(new), "a retried revision is a no-op"
    back = {"reason": "SRC: CMV excluded on BAL", "expected_state": "rejected"}
    assert client.post(f"{url}/confirm", json=back, headers=auth(OFFICER)).json()["state"] == "confirmed"
    assert (cohort_a(client)["decision"], cohort_a(client)["dlt_confirmed"]) == ("expand", 1)
    ids = [s.id for s in outbox(client) if isinstance(s, DltDecided)]
    assert len(ids) == 3 == len(set(ids)), "each decision is its own signal"
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        values = [row.value for row in session.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq)))]
    decisions = [v for v in values if b'"dlt.decided"' in v]
    assert [b'"revises"' in v for v in decisions] == [False, True, True], "a first decision's JSON is as before"


def test_unknown_dlt_is_404(client: TestClient) -> None:
    response = client.post("/v1/dlts/nope/confirm", json={"reason": "x"}, headers=auth(OFFICER))
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_dlt_list_and_state_filter(client: TestClient) -> None:
    url = f"/v1/trials/{TRIAL}/dlts"
    assert client.get(url).status_code == 401
    [row] = client.get(url, headers=auth(VIEWER)).json()
    assert (row["dlt_id"], row["subject_id"], row["arm"], row["criterion"]) == (
        DLT,
        "A-1",
        "A",
        "non_haematological_grade3",
    )
    assert client.get(url, params={"state": "confirmed"}, headers=auth(VIEWER)).json() == []
    assert client.get(url, params={"state": "bogus"}, headers=auth(VIEWER)).status_code == 422
    assert client.get("/v1/trials/OTHER/dlts", headers=auth(VIEWER)).status_code == 404


def test_cohorts_per_arm(client: TestClient) -> None:
    assert client.get(f"/v1/trials/{TRIAL}/cohorts").status_code == 401
    arms = client.get(f"/v1/trials/{TRIAL}/cohorts", headers=auth(VIEWER)).json()
    assert [a["arm"] for a in arms] == ["A", "B", "C"]
    first = arms[0]
    assert {k: first[k] for k in ("enrolled", "evaluable", "dlt_confirmed", "dlt_suspected", "decision")} == {
        "enrolled": 3,
        "evaluable": 0,
        "dlt_confirmed": 0,
        "dlt_suspected": 1,
        "decision": "awaiting_dlt_review",
    }
    assert arms[1]["decision"] == "enrolling" and arms[1]["enrolled"] == 0
    client.post(f"/v1/dlts/{DLT}/confirm", json={"reason": "yes"}, headers=auth(OFFICER))
    after = client.get(f"/v1/trials/{TRIAL}/cohorts", headers=auth(VIEWER)).json()[0]
    assert (after["decision"], after["dlt_confirmed"], after["evaluable"]) == ("expand", 1, 1)


def test_subject_timeline_shows_the_dlt_window_and_dlts(client: TestClient) -> None:
    body = client.get(f"/v1/trials/{TRIAL}/subjects/A-1", headers=auth(VIEWER)).json()
    assert body["dlt_window"] == {
        "basis": "last_planned_infusion",
        "start": "2026-03-02T10:00:00Z",
        "end": "2026-03-31T00:00:00Z",
        "first_day": "2026-03-02",
        "last_day": "2026-03-30",
        "days": 28,
        "state": "open",
        "study_day": 10,
    }
    assert body["evaluable"] is False
    assert [(d["ae_id"], d["state"]) for d in body["dlts"]] == [("AE-1", "suspected")]
    assert body["adverse_events"][0]["status"] is None
    assert body["doses"][0]["administered_on"] == "2026-03-02"


def withdraw(client: TestClient) -> None:
    driver = Driver(client.app.state.engine, client.app.state.protocol)  # type: ignore[attr-defined]
    driver.apply(ae("A-1", version=2, onset="2026-03-10", relatedness="not_related"))
    assert client.get(f"/v1/trials/{TRIAL}/dlts", headers=auth(VIEWER)).json()[0]["state"] == "withdrawn"


def test_confirming_a_dlt_a_follow_up_withdrew_needs_the_officer_to_say_so(client: TestClient) -> None:
    withdraw(client)
    rows, signals = len(audit(client)), len(outbox(client))
    url = f"/v1/dlts/{DLT}/confirm"
    refused = client.post(url, json={"reason": "CT confirmed"}, headers=auth(OFFICER))
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["state"] == "withdrawn"
    assert "withdrawn" in refused.json()["detail"] and "expected_state" in refused.json()["detail"]
    stale = client.post(url, json={"reason": "CT confirmed", "expected_state": "suspected"}, headers=auth(OFFICER))
    assert stale.status_code == 409 and stale.json()["state"] == "withdrawn"
    assert (len(audit(client)), len(outbox(client))) == (rows, signals), "a refused decision changes nothing"
    meant = client.post(url, json={"reason": "CT confirmed", "expected_state": "withdrawn"}, headers=auth(OFFICER))
    assert meant.status_code == 200 and meant.json()["state"] == "confirmed"
    [entry] = [e for e in audit(client) if e.action == "dlt.confirmed"]
    assert entry.detail["previous_state"] == "withdrawn"


def test_a_decision_about_the_current_state_goes_through(client: TestClient) -> None:
    url = f"/v1/dlts/{DLT}/reject"
    response = client.post(url, json={"reason": "pre-existing", "expected_state": "suspected"}, headers=auth(OFFICER))
    assert response.status_code == 200 and response.json()["state"] == "rejected"
    again = client.post(url, json={"reason": "pre-existing", "expected_state": "suspected"}, headers=auth(OFFICER))
    assert again.status_code == 200, "a retried decision is still a no-op, not a conflict"
    assert client.post(url, json={"reason": "x", "expected_state": "bogus"}, headers=auth(OFFICER)).status_code == 422


def test_a_nul_character_is_a_client_error_not_a_server_error(client: TestClient) -> None:
    rows, signals = len(audit(client)), len(outbox(client))
    response = client.post(f"/v1/dlts/{DLT}/confirm", json={"reason": "CT\u0000 confirmed"}, headers=auth(OFFICER))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert client.post("/v1/dlts/x%00y/confirm", json={"reason": "x"}, headers=auth(OFFICER)).status_code == 404
    assert client.get(f"/v1/trials/{TRIAL}/subjects/A%001", headers=auth(VIEWER)).status_code == 404
    assert (len(audit(client)), len(outbox(client))) == (rows, signals)
