"""Safety's expedited-reporting API: the SUSAR file, the officer's decisions (audited, signalled) and the
report downloads."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session, col, select

from services.safety.main import create_app
from services.safety.settings import SafetySettings
from shared.audit import AuditEntry, verify_chain
from shared.clock import FakeClock
from shared.events import SIGNAL_ADAPTER
from shared.outbox import OutboxMessage
from tests.unit.safety.clinical import RECEIVED, Driver, ae
from tests.unit.safety.e2b_structure import problems

VIEWER = "viewer-token-0123456789abcdef"
OFFICER = "officer-token-0123456789abcdef"
CASE = "/v1/trials/NCT07212335/subjects/S-001/aes/AE-1"
NOW = RECEIVED + timedelta(days=1)


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
    driver.apply(
        ae("S-001", term="Pneumonitis", grade=3, relatedness="unlikely", seriousness={"hospitalization": True})
    )
    return TestClient(app)


def signals(client: TestClient) -> list[object]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq))).all()
        return [SIGNAL_ADAPTER.validate_json(row.value) for row in rows]


def test_the_case_shows_the_rsi_proposal_and_a_narrative_draft(client: TestClient) -> None:
    body = client.get(f"{CASE}/expedited", headers=auth(VIEWER)).json()
    assert (body["proposed_expectedness"], body["susar"], body["site_relatedness"]) == ("unexpected", False, "unlikely")
    assert "'Pneumonitis' is not listed" in body["proposed_reason"]
    assert body["narrative"] == body["narrative_draft"] and "Subject S-001" in body["narrative"]
    listed = client.get("/v1/trials/NCT07212335/expedited-cases", headers=auth(VIEWER)).json()
    assert [c["ae_id"] for c in listed] == ["AE-1"]
    assert client.get("/v1/trials/NCT07212335/expedited-cases?susar=true", headers=auth(VIEWER)).json() == []
    missing = client.get("/v1/trials/NCT07212335/subjects/S-001/aes/AE-9/expedited", headers=auth(VIEWER))
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


def test_sponsor_causality_needs_an_officer_and_a_reason_and_starts_the_clock(client: TestClient) -> None:
    url = f"{CASE}/causality"
    assert client.post(url, json={"causality": "related", "reason": "x"}, headers=auth(VIEWER)).status_code == 403
    for body in (
        {"causality": "related"},
        {"causality": "maybe", "reason": "x"},
        {"causality": "related", "reason": " "},
    ):
        refused = client.post(url, json=body, headers=auth(OFFICER))
        assert refused.status_code == 422, body
    before = len(signals(client))
    decided = client.post(url, json={"causality": "related", "reason": "temporal association"}, headers=auth(OFFICER))
    assert decided.status_code == 200
    body = decided.json()
    assert body["susar"] and body["sponsor_causality"] == "related" and body["causality_by"] == "olga"
    assert datetime.fromisoformat(body["clock_start"]) == NOW  # day 0: the sponsor's decision
    [susar] = signals(client)[before:]
    assert susar.type == "susar.detected"  # type: ignore[attr-defined]
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        entries = session.exec(select(AuditEntry).where(AuditEntry.service == "safety")).all()
        assert [e.action for e in entries if e.entity.startswith("susar/")] == [
            "susar.causality_assessed",
            "susar.detected",
        ]
    _count, broken = verify_chain(client.app.state.engine, service="safety")  # type: ignore[attr-defined]
    assert broken == []


def test_the_officer_confirms_expectedness_and_edits_the_narrative(client: TestClient) -> None:
    confirmed = client.post(
        f"{CASE}/expectedness", json={"expectedness": "unexpected", "reason": "not in IB 7.3"}, headers=auth(OFFICER)
    )
    assert confirmed.status_code == 200 and confirmed.json()["confirmed_expectedness"] == "unexpected"
    edited = client.put(f"{CASE}/narrative", json={"text": "Edited narrative."}, headers=auth(OFFICER))
    assert edited.status_code == 200 and edited.json()["narrative_edited"]
    detail = client.get(f"{CASE}/expedited", headers=auth(VIEWER)).json()
    assert detail["narrative"] == "Edited narrative." and detail["narrative_draft"] != "Edited narrative."
    xml = client.get(f"{CASE}/reports/e2b.xml", headers=auth(OFFICER))
    assert xml.status_code == 200 and b"Edited narrative." in xml.content
    reverted = client.put(f"{CASE}/narrative", json={"text": None}, headers=auth(OFFICER))
    assert not reverted.json()["narrative_edited"]


def test_report_downloads_are_for_officers(client: TestClient) -> None:
    assert client.get(f"{CASE}/reports/cioms.pdf", headers=auth(VIEWER)).status_code == 403
    pdf = client.get(f"{CASE}/reports/cioms.pdf", headers=auth(OFFICER))
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and "NCT07212335-S-001-AE-1-v1.pdf" in pdf.headers["content-disposition"]
    xml = client.get(f"{CASE}/reports/e2b.xml?recipient=regulator&version=1", headers=auth(OFFICER))
    assert xml.status_code == 200 and problems(xml.content) == []
    assert b'extension="EVCTMPROD" root="2.16.840.1.113883.3.989.2.1.3.14"' in xml.content  # the protocol's id
    assert client.get(f"{CASE}/reports/e2b.xml?recipient=nobody", headers=auth(OFFICER)).status_code == 422
    assert client.get(f"{CASE}/reports/e2b.xml?version=7", headers=auth(OFFICER)).status_code == 404
    assert client.get(f"{CASE}/reports/e2b.xml?version=0", headers=auth(OFFICER)).status_code == 422
