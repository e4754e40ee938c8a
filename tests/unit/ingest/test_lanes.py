"""Which lane ingest publishes to: a backfill goes to the bulk topic, except what must page at once."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.events import CLINICAL_ADAPTER, AeReported, LabResulted
from shared.lanes import BULK_REQUEST_EVENTS, bulk_topic, is_backfill, must_page
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import TRIAL, AppFactory

TOKEN = "backfill-token-0123456789abcdef"
CLINICAL = "test.clinical.v1"


@pytest.fixture
def backfill(make_client: AppFactory) -> TestClient:
    return make_client(
        {"sources": {"backfill": {"kind": "sdtm", "trial": TRIAL, "auth": {"scheme": "bearer", "secret": TOKEN}}}}
    )


def lab_row(seq: int) -> dict[str, Any]:
    return {
        "DOMAIN": "LB",
        "USUBJID": "101-001",
        "LBSEQ": seq,
        "LBTESTCD": "PLAT",
        "LBORRES": "120",
        "LBORRESU": "10^9/L",
        "LBORNRLO": "150",
        "LBORNRHI": "400",
        "LBDTC": "2026-03-01T08:00:00Z",
    }


def ae_row(seq: int, grade: str, serious: str = "N") -> dict[str, Any]:
    return {
        "DOMAIN": "AE",
        "USUBJID": "101-001",
        "AESEQ": seq,
        "AETERM": "Pneumonitis",
        "AETOXGR": grade,
        "AESER": serious,
        "AESTDTC": "2026-03-01",
    }


def post(client: TestClient, rows: list[dict[str, Any]]) -> None:
    response = client.post(
        "/v1/sources/backfill/sdtm",
        content=json.dumps({"rows": rows}),
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert response.status_code == 202, response.text


def test_a_backfill_takes_the_bulk_lane_but_what_must_page_does_not(
    backfill: TestClient, publisher: FakePublisher
) -> None:
    post(backfill, [lab_row(1), ae_row(1, "2"), ae_row(2, "3"), ae_row(3, "1", serious="Y")])
    lanes = {}
    for topic, _, value in publisher.messages:
        envelope = CLINICAL_ADAPTER.validate_json(value)
        lanes[(type(envelope).__name__, getattr(envelope.data, "ae_id", ""))] = topic
    bulk = bulk_topic(CLINICAL)
    assert lanes[(LabResulted.__name__, "")] == bulk
    ae_lanes = sorted(topic for (kind, _), topic in lanes.items() if kind == AeReported.__name__)
    assert ae_lanes == [CLINICAL, CLINICAL, bulk], "grade 3 and serious AEs page at once; a grade 2 AE waits"


def test_only_serious_or_severe_aes_must_page(make_ae: Any) -> None:
    assert must_page(make_ae(grade=3, serious=False))
    assert must_page(make_ae(grade=1, serious=True))
    assert must_page(make_ae(grade=1, serious=None, seriousness={"hospitalization": True}))
    assert not must_page(make_ae(grade=2, serious=False))


def test_a_large_request_is_a_backfill_whatever_its_route() -> None:
    assert not is_backfill(events=1, backfill_route=False)
    assert not is_backfill(events=BULK_REQUEST_EVENTS, backfill_route=False)
    assert is_backfill(events=BULK_REQUEST_EVENTS + 1, backfill_route=False)
    assert is_backfill(events=1, backfill_route=True)


def test_a_backfill_is_parsed_looked_up_and_planned_off_the_event_loop(
    backfill: TestClient, publisher: FakePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What takes a large backfill seconds runs in a thread, so the event loop goes on answering other posts (an
    SAE posted meanwhile waits milliseconds for its 202, not the backfill's parse)."""
    from services.ingest import intake, routes_sdtm

    threads: dict[str, set[str]] = {"parse": set(), "plan": set()}
    parse, plan = routes_sdtm.parse_sdtm, intake._planned

    def spy_parse(*args: Any, **kwargs: Any) -> Any:
        threads["parse"].add(threading.current_thread().name)
        return parse(*args, **kwargs)

    def spy_plan(*args: Any, **kwargs: Any) -> Any:
        threads["plan"].add(threading.current_thread().name)
        return plan(*args, **kwargs)

    monkeypatch.setattr(routes_sdtm, "parse_sdtm", spy_parse)
    monkeypatch.setattr(intake, "_planned", spy_plan)
    monkeypatch.setattr(intake, "OFF_LOOP_RECORDS", 3)
    monkeypatch.setattr(intake, "LARGE_BODY_BYTES", len(json.dumps({"rows": [lab_row(9)]})) + 1)
    post(backfill, [lab_row(n) for n in range(1, 4)])
    post(backfill, [lab_row(9)])  # below both sizes: parsed and planned on the loop
    assert len(publisher.messages) == 4
    parsed_in = sorted(threads["parse"])
    assert len(parsed_in) == 2 and sum(name.startswith("asyncio_") for name in parsed_in) == 1, parsed_in
    planned_in = sorted(threads["plan"])
    assert len(planned_in) == 2 and sum(name.startswith("asyncio_") for name in planned_in) == 1, planned_in
