"""Safety's decision API and record corrections on SQLite and PostgreSQL: what PostgreSQL cannot store (NUL) is a
client error, and a re-sent record round-tripped through the database is recognised as unchanged."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.safety.main import create_app
from services.safety.protocol_engine import dlt_id_for
from services.safety.settings import SafetySettings
from shared.audit import AuditEntry
from shared.clock import FakeClock
from tests.unit.safety.clinical import Driver, ae, dose, enrol, lab

pytestmark = pytest.mark.integration
TRIAL = "NCT07212335"
OFFICER = "officer-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> TestClient:
    settings = SafetySettings(
        database_url=database_url,
        var_dir=tmp_path,
        api_tokens={OFFICER: {"user": "olga", "role": "officer"}, VIEWER: {"user": "vera", "role": "viewer"}},
    )
    app = create_app(settings, clock=FakeClock(datetime(2026, 3, 12, 9, tzinfo=UTC)), registry=CollectorRegistry())
    return TestClient(app)  # no lifespan: no broker needed


def driver_of(client: TestClient) -> Driver:
    return Driver(client.app.state.engine, client.app.state.protocol)  # type: ignore[attr-defined]


def test_a_nul_character_is_refused_before_it_reaches_the_database(client: TestClient) -> None:
    driver = driver_of(client)
    driver.apply_all([enrol("A-1", "A", date(2026, 3, 2)), dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC))])
    driver.apply(ae("A-1", onset="2026-03-10", relatedness="probable"))
    officer = {"authorization": f"Bearer {OFFICER}"}
    url = f"/v1/dlts/{dlt_id_for(TRIAL, 'A-1', 'AE-1')}/confirm"
    assert client.post(url, json={"reason": "CT\u0000 confirmed"}, headers=officer).status_code == 422
    assert client.post("/v1/dlts/x%00y/confirm", json={"reason": "x"}, headers=officer).status_code == 404
    viewer = {"authorization": f"Bearer {VIEWER}"}
    assert client.get(f"/v1/trials/{TRIAL}/subjects/A%001", headers=viewer).status_code == 404
    confirmed = client.post(url, json={"reason": "CT confirmed", "expected_state": "suspected"}, headers=officer)
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "confirmed"


def test_re_sent_records_are_unchanged_after_a_database_round_trip_and_corrections_are_audited(
    client: TestClient,
) -> None:
    driver = driver_of(client)
    site_time = datetime.fromisoformat("2026-03-02T23:30:00-05:00")
    infusion = dose("A-1", site_time)
    result = lab("A-1", result_id="R-1", test="NEUT", value="1.2", lln="2.0", collected_at=site_time)
    driver.apply_all([enrol("A-1", "A", date(2026, 3, 2)), infusion, result])
    for envelope in (infusion, result):
        resent = envelope.model_copy(update={"id": f"{envelope.id}-again", "senderid": "again"})
        assert driver.apply(resent) == []
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        assert session.exec(select(AuditEntry).where(AuditEntry.action.endswith(".corrected"))).all() == []  # type: ignore[attr-defined]
    worse = result.model_copy(
        update={"id": "corrected", "senderid": "corrected", "data": result.data.model_copy(update={"value": "0.3"})}
    )
    # a lab toxicity, and (no baseline: taken as normal) a lab-only suspected haematological DLT for arm A
    assert [s.type for s in driver.apply(worse)][:2] == ["lab.toxicity", "dlt.suspected"]  # type: ignore[attr-defined]
    with Session(engine) as session:
        [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == "lab.corrected")).all()
        assert entry.detail["before"]["value"] == "1.2" and entry.detail["after"]["value"] == "0.3"
