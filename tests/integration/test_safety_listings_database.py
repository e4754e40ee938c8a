"""Safety's read-only listings (the console's data) on SQLite and PostgreSQL: the audit queries (prefix and
substring on entity names) and the per-trial joins answer the same on both."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.safety.main import create_app
from services.safety.protocol_engine import dlt_id_for
from services.safety.settings import SafetySettings
from shared.clock import FakeClock
from tests.unit.safety.clinical import Driver, ae, dose, enrol, lab

pytestmark = pytest.mark.integration
TRIAL = "NCT07212335"
OFFICER = "officer-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {OFFICER}"}


def test_listings_and_audit_trails(database_url: str, tmp_path: Path) -> None:
    settings = SafetySettings(
        database_url=database_url, var_dir=tmp_path, api_tokens={OFFICER: {"user": "olga", "role": "officer"}}
    )
    app = create_app(settings, clock=FakeClock(datetime(2026, 3, 12, 9, tzinfo=UTC)), registry=CollectorRegistry())
    client = TestClient(app)
    driver = Driver(app.state.engine, app.state.protocol)
    for subject in ("A_1", "A%2"):  # LIKE wildcards in ids must not widen a subject's audit trail
        driver.apply_all([enrol(subject, "A", date(2026, 3, 1)), dose(subject, datetime(2026, 3, 2, 10, tzinfo=UTC))])
        driver.apply(ae(subject, onset="2026-03-10", relatedness="probable"))
    first = lab(
        "A_1", result_id="N-1", test="NEUT", value="0.3", lln="1.8", collected_at=datetime(2026, 3, 5, tzinfo=UTC)
    )
    driver.apply(first)
    driver.apply(
        first.model_copy(
            update={"id": "again", "senderid": "again", "data": first.data.model_copy(update={"value": "0.2"})}
        )
    )
    dlt = dlt_id_for(TRIAL, "A_1", "AE-1")
    assert client.post(f"/v1/dlts/{dlt}/confirm", json={"reason": "yes"}, headers=AUTH).status_code == 200

    subjects = client.get(f"/v1/trials/{TRIAL}/subjects", headers=AUTH).json()
    assert [(s["subject_id"], s["dlt_confirmed"], s["dlt_suspected"]) for s in subjects] == [
        ("A%2", 0, 1),
        ("A_1", 1, 1),  # neutrophils falling to grade 4 in the window: a lab-only suspected DLT
    ]
    aes = client.get(f"/v1/trials/{TRIAL}/adverse-events", params={"subject": "A_1"}, headers=AUTH).json()
    assert [(a["subject_id"], a["dlt_state"]) for a in aes] == [("A_1", "confirmed")]
    labs = client.get(f"/v1/trials/{TRIAL}/lab-toxicities", headers=AUTH).json()
    assert [(x["result_id"], x["value"], x["grade"]) for x in labs] == [("N-1", "0.2", 4)]
    trail = client.get(f"/v1/trials/{TRIAL}/audit", params={"subject": "A_1"}, headers=AUTH).json()
    entities = {e["entity"] for e in trail}
    named = {f"dlt/{dlt}", f"lab/{TRIAL}/A_1/N-1"}
    [lab_dlt] = entities - named  # the lab-only suspected DLT of the grade 4 neutrophils
    assert named <= entities and lab_dlt.startswith("dlt/")
    assert [e["action"] for e in trail if e["entity"] == f"dlt/{dlt}"] == ["dlt.suspected", "dlt.confirmed"]
    cohorts = client.get(f"/v1/trials/{TRIAL}/audit", params={"cohorts": "true"}, headers=AUTH).json()
    assert cohorts and {e["entity"] for e in cohorts} == {f"cohort/{TRIAL}/A"}
