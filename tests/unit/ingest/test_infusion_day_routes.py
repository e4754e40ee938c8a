"""Canonical vitals, AE review and subject-status events through the webhook: accepted and published (never a
500), and a vital sign that cannot be a Celsius temperature is a 422 naming the field."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from shared.clock import FakeClock
from shared.events import CLINICAL_ADAPTER, AeReviewRecorded, SubjectStatusChanged, VitalsRecorded
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.test_routes import assert_problem, client, post, settings  # noqa: F401  (fixtures)


def event(n: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"msg-{n}", "type": kind, "study": "NCT07212335", "site": "SITE-1", "subject": "S-007", "data": data}


VITALS = {"vitals_id": "VS-1", "measured_at": "2026-03-02T09:15:00+01:00", "temperature_c": 38.4, "spo2": "97"}


def test_vitals_ae_review_and_subject_status_are_published(
    client: TestClient,  # noqa: F811
    clock: FakeClock,
    publisher: FakePublisher,
) -> None:
    posted = [
        event(1, "vitals", VITALS),
        event(2, "ae_review", {"review_id": "AER-4", "assessed_at": "2026-03-30T10:00:00Z", "visit": "week 4"}),
        event(3, "subject_status", {"status": "withdrawn", "effective_on": "2026-04-02"}),
    ]
    response = post(client, clock, {"events": posted})
    assert response.status_code == 202, response.text
    envelopes = [CLINICAL_ADAPTER.validate_json(value) for _, _, value in publisher.messages]
    vitals, review, status = envelopes
    assert isinstance(vitals, VitalsRecorded) and str(vitals.data.temperature_c) == "38.4"
    assert vitals.time.isoformat() == "2026-03-02T09:15:00+01:00"
    assert isinstance(review, AeReviewRecorded) and review.data.new_aes is False
    assert isinstance(status, SubjectStatusChanged)


def test_a_temperature_in_fahrenheit_is_refused_naming_the_field(
    client: TestClient,  # noqa: F811
    clock: FakeClock,
    publisher: FakePublisher,
) -> None:
    problem = assert_problem(post(client, clock, event(1, "vitals", {**VITALS, "temperature_c": 101.2})), 422)
    assert any(e.get("pointer") == "/data/temperature_c" for e in problem.get("errors", [])), problem
    assert publisher.messages == []
