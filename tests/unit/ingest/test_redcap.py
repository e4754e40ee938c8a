"""REDCap: the Data Entry Trigger is stored, then the record is pulled (fake REDCap API) and published;
reconciliation pulls catch imports; a record gone from REDCap becomes status events."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from services.ingest.adapters.redcap import parse_det
from services.ingest.models import RedcapTrigger
from services.ingest.normalise import InvalidBody
from shared.clock import FakeClock
from shared.events import CLINICAL_ADAPTER, AeReported, LabResulted, RecordStatusChanged, SubjectEnrolled
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import FIXTURES, TRIAL, AppFactory, fixture_bytes

DET_TOKEN = "det-token-for-project-42-abcdef"
API_TOKEN = "0123456789ABCDEF0123456789ABCDEF"
ENV = {"TEST_DET_TOKEN": DET_TOKEN, "TEST_REDCAP_TOKEN": API_TOKEN}
URL = f"/v1/sources/redcap-cart/redcap-det?token={DET_TOKEN}"
FORM = {"content-type": "application/x-www-form-urlencoded"}


class FakeRedcap:
    """The REDCap API's record export, as an httpx transport: records by id, and a log of what was asked."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {
            "101-007": json.loads((FIXTURES / "redcap/records_101-007.json").read_text())
        }
        self.requests: list[dict[str, str]] = []
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode(), keep_blank_values=True).items()}
        self.requests.append(form)
        assert str(request.url) == "https://redcap.example.org/api/"
        if self.down:
            return httpx.Response(503, text="maintenance")
        if form.get("token") != API_TOKEN:
            return httpx.Response(403, json={"error": "You do not have permissions to use the API"})
        assert (form["content"], form["format"], form["type"]) == ("record", "json", "flat")
        wanted = form.get("records[0]")
        rows = [row for record, rows in self.records.items() if wanted in (None, record) for row in rows]
        return httpx.Response(200, json=rows)


@pytest.fixture
def redcap() -> FakeRedcap:
    return FakeRedcap()


@pytest.fixture
def client(make_client: AppFactory, redcap: FakeRedcap) -> TestClient:
    import yaml

    sources = yaml.safe_load((FIXTURES / "redcap/sources.yaml").read_text())
    return make_client(sources, env=ENV, transport=httpx.MockTransport(redcap.handle))


def run_jobs(client: TestClient) -> None:
    client.portal.call(client.app.state.redcap_sync.run_once)  # type: ignore[attr-defined,union-attr]


def published(publisher: FakePublisher) -> list[Any]:
    return [CLINICAL_ADAPTER.validate_json(value) for _, _, value in publisher.messages]


def triggers(client: TestClient) -> list[RedcapTrigger]:
    with Session(client.app.state.runtime.engine) as session:  # type: ignore[attr-defined]
        return list(session.exec(select(RedcapTrigger)).all())


def test_det_body_parses_string_ids_and_unescaped_question_mark() -> None:
    notice = parse_det(fixture_bytes("redcap/det_body.txt").strip(), project_id="42")
    assert (notice.record, notice.instrument, notice.event, notice.repeat_instance) == (
        "101-007",
        "adverse_events",
        "treatment_arm_1",
        "1",
    )
    with pytest.raises(InvalidBody) as caught:
        parse_det(fixture_bytes("redcap/det_body.txt").strip(), project_id="43")
    assert caught.value.errors[0]["loc"] == ("project_id",)
    with pytest.raises(InvalidBody):
        parse_det(b"project_id=42&instrument=x", project_id="42")


def test_trigger_is_stored_then_the_record_is_pulled_and_published(
    client: TestClient, redcap: FakeRedcap, publisher: FakePublisher
) -> None:
    response = client.post(URL, content=fixture_bytes("redcap/det_body.txt").strip(), headers=FORM)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == ["redcap-trigger:1"]
    assert publisher.messages == [] and [t.state for t in triggers(client)] == ["pending"]

    run_jobs(client)
    trigger_pull = redcap.requests[0]
    assert trigger_pull["records[0]"] == "101-007" and "dateRangeBegin" not in trigger_pull
    events = published(publisher)
    kinds = sorted(type(e).__name__ for e in events)
    assert kinds == ["AeReported", "AeReported", "LabResulted", "LabResulted", "LabResulted", "SubjectEnrolled"]
    crs = next(e for e in events if isinstance(e, AeReported) and e.data.term == "Cytokine release syndrome")
    assert crs.siteid == "site_101" and crs.trialid == TRIAL and crs.subject == "101-007"
    assert crs.data.serious is True and crs.data.grade == 3 and crs.data.relatedness == "possible"
    assert crs.data.awareness_at is not None and crs.data.awareness_at.hour == 13  # 07:45 Chicago, in UTC
    assert crs.data.first_received_at is not None and crs.data.awareness_at != crs.data.first_received_at
    anc = next(e for e in events if isinstance(e, LabResulted) and e.data.test == "NEUT")
    assert anc.data.baseline is True and anc.data.unit == "10^9/L"
    assert any(isinstance(e, SubjectEnrolled) and e.data.arm == "DL1" for e in events)
    assert [t.state for t in triggers(client)] == ["done"]


def test_det_needs_the_token(client: TestClient) -> None:
    body = fixture_bytes("redcap/det_body.txt").strip()
    assert client.post("/v1/sources/redcap-cart/redcap-det", content=body, headers=FORM).status_code == 401
    wrong = client.post("/v1/sources/redcap-cart/redcap-det?token=nope", content=body, headers=FORM)
    assert wrong.status_code == 401
    bearer = {**FORM, "authorization": f"Bearer {DET_TOKEN}"}
    assert client.post("/v1/sources/redcap-cart/redcap-det", content=body, headers=bearer).status_code == 202


def test_failed_pull_is_kept_and_retried_with_backoff(
    client: TestClient, redcap: FakeRedcap, publisher: FakePublisher, clock: FakeClock
) -> None:
    redcap.down = True
    client.post(URL, content=fixture_bytes("redcap/det_body.txt").strip(), headers=FORM)
    run_jobs(client)
    [trigger] = triggers(client)
    assert trigger.state == "pending" and trigger.attempts == 1 and "503" in (trigger.last_error or "")
    redcap.down = False
    run_jobs(client)  # the trigger is not due yet (backoff); the failed reconciliation is retried and publishes
    assert [(t.state, t.attempts) for t in triggers(client)] == [("pending", 1)]
    assert len(published(publisher)) == 6
    clock.advance(timedelta(minutes=2))
    run_jobs(client)
    [trigger] = triggers(client)
    assert trigger.state == "done" and len(published(publisher)) == 6  # the pull found nothing new


def test_reconciliation_pulls_on_the_clock_and_publishes_only_changes(
    client: TestClient, redcap: FakeRedcap, publisher: FakePublisher, clock: FakeClock
) -> None:
    run_jobs(client)  # first reconciliation: everything, no dateRangeBegin
    assert len(redcap.requests) == 1 and "dateRangeBegin" not in redcap.requests[0]
    assert len(publisher.messages) == 6
    clock.advance(timedelta(minutes=10))
    run_jobs(client)
    assert len(redcap.requests) == 1  # not due for 30 minutes
    redcap.records["101-007"][2]["aetoxgr"] = "2"  # an API import: no trigger fires
    clock.advance(timedelta(minutes=21))
    run_jobs(client)
    since = redcap.requests[-1]["dateRangeBegin"]
    assert since == "2026-03-01 01:50:00"  # first run 08:00 UTC, minus 10 min overlap, in Chicago time
    [changed] = published(publisher)[6:]
    assert isinstance(changed, AeReported) and changed.data.term == "Headache"
    assert changed.data.version == 2 and changed.data.grade == 2


def test_record_deleted_in_redcap_becomes_status_events(
    client: TestClient, redcap: FakeRedcap, publisher: FakePublisher
) -> None:
    client.post(URL, content=fixture_bytes("redcap/det_body.txt").strip(), headers=FORM)
    run_jobs(client)
    assert len(publisher.messages) == 6
    redcap.records["101-007"] = []
    client.post(URL, content=fixture_bytes("redcap/det_body.txt").strip(), headers=FORM)
    run_jobs(client)
    statuses = [e for e in published(publisher)[6:] if isinstance(e, RecordStatusChanged)]
    assert len(statuses) == 6 and {s.data.status for s in statuses} == {"deleted"}
    assert {s.data.record_type for s in statuses} == {"ae", "lab", "enrollment"}


def test_a_pulled_number_safety_could_not_process_is_kept_back_as_unmappable(
    client: TestClient, redcap: FakeRedcap, publisher: FakePublisher
) -> None:
    redcap.records["101-007"][0]["anc"] = "1e999999"
    assert client.post(URL, content=fixture_bytes("redcap/det_body.txt").strip(), headers=FORM).status_code == 202
    run_jobs(client)
    labs = [e for e in published(publisher) if isinstance(e, LabResulted)]
    assert sorted(e.data.test for e in labs) == ["HGB", "PLAT"]  # the other analytes still go through
    states = [(t.state, t.last_error or "") for t in triggers(client)]
    assert any(state == "unmappable" and "value" in error for state, error in states), states
