"""Safety's read API: the subject timeline, graded labs included; bearer tokens required."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session

from services.safety.main import create_app
from services.safety.models import LabResult, Subject
from services.safety.settings import SafetySettings

TOKEN = "viewer-token-0123456789abcdef"


@pytest.fixture
def client(tmp_path: Path, clean_env: None) -> TestClient:
    settings = SafetySettings(var_dir=tmp_path, api_tokens={TOKEN: {"user": "v", "role": "viewer"}})
    app = create_app(settings, registry=CollectorRegistry())
    with Session(app.state.engine) as session, session.begin():
        session.add(Subject(trial_id="T1", subject_id="S-1", site_id="101", arm="A", enrolled_at=date(2026, 3, 1)))
        session.add(
            LabResult(
                trial_id="T1",
                subject_id="S-1",
                result_id="R-1",
                test="NEUT",
                value="0.4",
                unit="10^9/L",
                collected_at=datetime(2026, 3, 2, tzinfo=UTC),
                term="Neutrophil count decreased",
                grade=4,
                grade_reason="grade 4: 0.4 < 0.5",
            )
        )
    return TestClient(app)  # no lifespan: no broker needed to read


def test_timeline_shows_graded_labs(client: TestClient) -> None:
    response = client.get("/v1/trials/T1/subjects/S-1", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    body = response.json()
    assert body["arm"] == "A"
    assert [(lab["term"], lab["grade"]) for lab in body["labs"]] == [("Neutrophil count decreased", 4)]


def test_timeline_needs_a_token_and_names_a_missing_subject(client: TestClient) -> None:
    assert client.get("/v1/trials/T1/subjects/S-1").status_code == 401
    missing = client.get("/v1/trials/T1/subjects/S-9", headers={"authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "S-9" in missing.json()["detail"]
