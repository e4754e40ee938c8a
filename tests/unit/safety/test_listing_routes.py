"""Safety's read-only listings for the console: subjects, every AE, lab toxicities, blood-count series with CTCAE
bands, the visit schedule and the audit trail of a subject, a DLT and the cohorts. Viewers read; none writes."""

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
from tests.unit.safety.clinical import Driver, ae, dose, enrol, lab, status

VIEWER = "viewer-token-0123456789abcdef"
OFFICER = "officer-token-0123456789abcdef"
TRIAL = "NCT07212335"
NOW = datetime(2026, 3, 12, 9, tzinfo=UTC)
V = {"authorization": f"Bearer {VIEWER}"}


@pytest.fixture
def client(tmp_path: Path, clean_env: None) -> TestClient:
    settings = SafetySettings(
        var_dir=tmp_path,
        api_tokens={VIEWER: {"user": "vera", "role": "viewer"}, OFFICER: {"user": "olga", "role": "officer"}},
    )
    app = create_app(settings, clock=FakeClock(NOW), registry=CollectorRegistry())
    driver = Driver(app.state.engine, app.state.protocol)
    infused = datetime(2026, 3, 2, 10, tzinfo=UTC)
    day1, day5, day6 = (datetime(2026, 3, d, tzinfo=UTC) for d in (1, 5, 6))
    driver.apply_all([enrol("A-1", "A", date(2026, 3, 1)), dose("A-1", infused), enrol("A-2", "A", date(2026, 3, 1))])
    driver.apply_all(
        [
            lab("A-1", result_id="N-0", test="NEUT", value="1.9", lln="1.8", collected_at=day1,
                baseline=True),
            lab("A-1", result_id="N-1", test="NEUT", value="800", unit="cells/uL", lln="1800",
                collected_at=day5),
            lab("A-1", result_id="N-2", test="NEUT", value="0.2", lln="1.8", collected_at=day6),
            status("A-1", "lab", "N-2"),
            lab("A-1", result_id="H-1", test="HGB", value="7.5", unit="g/dL", lln="12",
                collected_at=day5),
        ]
    )  # fmt: skip
    driver.apply(ae("A-1", onset="2026-03-10", relatedness="probable"))
    driver.apply(ae("A-1", ae_id="AE-2", term="Nausea", grade=1, onset="2026-03-04"))
    return TestClient(app)  # no lifespan: no broker needed


def test_subjects_listed_with_their_window_and_counts(client: TestClient) -> None:
    rows = client.get(f"/v1/trials/{TRIAL}/subjects", headers=V).json()
    first, second = rows
    assert (first["subject_id"], first["infusions"], first["window_state"], first["study_day"]) == (
        "A-1",
        1,
        "open",
        10,  # the shipped protocol counts the infusion day as day 0
    )
    # AE-1, and the lab-only haematological DLTs: neutrophils and haemoglobin grade 3 in the window
    assert (first["adverse_events"], first["dlt_suspected"]) == (2, 3)
    assert (second["subject_id"], second["window_state"], second["infusions"]) == ("A-2", None, 0)
    assert client.get(f"/v1/trials/{TRIAL}/subjects").status_code == 401
    assert client.get("/v1/trials/OTHER/subjects", headers=V).status_code == 404


def test_adverse_events_and_lab_toxicities(client: TestClient) -> None:
    aes = client.get(f"/v1/trials/{TRIAL}/adverse-events", headers=V).json()
    assert [(a["ae_id"], a["grade"], a["dlt_state"]) for a in aes] == [("AE-1", 3, "suspected"), ("AE-2", 1, None)]
    assert aes[0]["dlt_id"] == dlt_id_for(TRIAL, "A-1", "AE-1") and aes[0]["arm"] == "A"
    assert client.get(f"/v1/trials/{TRIAL}/adverse-events", params={"serious": "true"}, headers=V).json() == []
    labs = client.get(f"/v1/trials/{TRIAL}/lab-toxicities", params={"min_grade": 2}, headers=V).json()
    assert [(x["result_id"], x["grade"]) for x in labs] == [("H-1", 3), ("N-1", 3)]  # N-2 was entered in error
    assert client.get(f"/v1/trials/{TRIAL}/lab-toxicities", params={"min_grade": 9}, headers=V).status_code == 422


def test_blood_counts_in_ctcae_units_with_bands_and_baseline(client: TestClient) -> None:
    series = {s["name"]: s for s in client.get(f"/v1/trials/{TRIAL}/subjects/A-1/lab-series", headers=V).json()}
    neut = series["neutrophils"]
    assert neut["unit"] == "10^9/L" and neut["baseline"] == "1.9"
    assert [(p["result_id"], p["value"]) for p in neut["points"]] == [("N-0", "1.9"), ("N-1", "0.800")]
    assert [(b["grade"], float(b["below"])) for b in neut["bands"]] == [(1, 1.8), (2, 1.5), (3, 1.0), (4, 0.5)]
    haem = series["haemoglobin"]
    assert haem["unit"] == "g/L" and [float(p["value"]) for p in haem["points"]] == [75.0]
    assert [(b["grade"], float(b["below"])) for b in haem["bands"]] == [(1, 120.0), (2, 100.0), (3, 80.0)]
    assert series["platelets"]["points"] == []


def test_visits_from_the_dlt_anchor(client: TestClient) -> None:
    visits = client.get(f"/v1/trials/{TRIAL}/subjects/A-1/visits", headers=V).json()
    assert visits and {v["state"] for v in visits} <= {"upcoming", "due", "done", "missed"}
    assert all(v["due_from"] < v["due_until"] for v in visits)
    assert client.get(f"/v1/trials/{TRIAL}/subjects/A-2/visits", headers=V).json() == []  # no infusion: no anchor


def test_audit_of_a_dlt_a_subject_and_the_cohorts(client: TestClient) -> None:
    dlt = dlt_id_for(TRIAL, "A-1", "AE-1")
    decided = client.post(
        f"/v1/dlts/{dlt}/confirm", json={"reason": "CT confirmed"}, headers={"authorization": f"Bearer {OFFICER}"}
    )
    assert decided.status_code == 200
    trail = client.get(f"/v1/trials/{TRIAL}/audit", params={"dlt": dlt}, headers=V).json()
    assert [(e["action"], e["actor"]) for e in trail] == [
        ("dlt.suspected", "safety (automatic)"),
        ("dlt.confirmed", "olga"),
    ]
    subject = client.get(f"/v1/trials/{TRIAL}/audit", params={"subject": "A-1"}, headers=V).json()
    assert {e["entity"] for e in subject} >= {f"dlt/{dlt}"}
    cohorts = client.get(f"/v1/trials/{TRIAL}/audit", params={"cohorts": "true"}, headers=V).json()
    assert cohorts and all(e["entity"].startswith(f"cohort/{TRIAL}/") for e in cohorts)
    assert client.get(f"/v1/trials/{TRIAL}/audit", headers=V).status_code == 422
