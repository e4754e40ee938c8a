"""Infusion day on SQLite and PostgreSQL: re-sent vitals and AE reviews are recognised as unchanged after a
database round trip (exact decimals, instants in UTC), and the subject API shows the acute reaction, the
vitals and the review."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.safety.main import create_app
from services.safety.settings import SafetySettings
from shared.clock import FakeClock
from tests.unit.safety.clinical import Driver, ae, ae_review, dose, enrol, of_type, status, vitals

pytestmark = pytest.mark.integration
TRIAL = "NCT07212335"
VIEWER = "viewer-token-0123456789abcdef"
SITE = timezone(timedelta(hours=-5))
INFUSED = datetime(2026, 3, 2, 21, 0, tzinfo=SITE)  # 02:00 UTC on 03-03


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> TestClient:
    settings = SafetySettings(
        database_url=database_url, var_dir=tmp_path, api_tokens={VIEWER: {"user": "vera", "role": "viewer"}}
    )
    app = create_app(settings, clock=FakeClock(datetime(2026, 3, 12, 9, tzinfo=UTC)), registry=CollectorRegistry())
    return TestClient(app)  # no lifespan: no broker needed


def test_round_trips_and_the_subject_api(client: TestClient) -> None:
    driver = Driver(client.app.state.engine, client.app.state.protocol)  # type: ignore[attr-defined]
    driver.apply_all([enrol("A-1", "A", date(2026, 3, 2)), dose("A-1", INFUSED)])
    reading = vitals("A-1", INFUSED + timedelta(minutes=15), temperature_c="38.50", systolic_bp="101")
    [fever] = of_type(driver.apply(reading), "lab.toxicity")
    assert (fever.data.term, fever.data.grade, fever.data.value) == ("Fever", 1, "38.50")
    resent = reading.model_copy(update={"id": f"{reading.id}-again", "senderid": "again"})
    assert driver.apply(resent) == [], "the same reading after a database round trip is unchanged"
    review = ae_review("A-1", datetime(2026, 3, 30, 9, tzinfo=SITE), visit="week 4")
    driver.apply(review)
    assert driver.apply(review.model_copy(update={"id": f"{review.id}-again"})) == []
    onset = (INFUSED + timedelta(hours=23, minutes=59)).isoformat()
    [acute] = of_type(driver.apply(ae("A-1", term="Chills", grade=2, onset_at=onset)), "acute_reaction.detected")
    assert acute.data.onset == "2026-03-03" and str(acute.data.hours_after_infusion) == "23.9"  # never rounded up

    shown = client.get(f"/v1/trials/{TRIAL}/subjects/A-1", headers={"authorization": f"Bearer {VIEWER}"})
    assert shown.status_code == 200, shown.text
    body = shown.json()
    [reaction] = body["acute_reactions"]
    assert (reaction["ae_id"], reaction["grade"], reaction["onset_precision"]) == ("AE-1", 2, "time")
    assert [v["temperature_c"] for v in body["vital_signs"]] == ["38.50"]
    assert [(r["visit"], r["new_aes"]) for r in body["ae_reviews"]] == [("week 4", False)]
    assert reaction["ae_status"] is None
    driver.apply(status("A-1", "ae", "AE-1"))
    body = client.get(f"/v1/trials/{TRIAL}/subjects/A-1", headers={"authorization": f"Bearer {VIEWER}"}).json()
    assert body["acute_reactions"][0]["ae_status"] == "entered_in_error"
