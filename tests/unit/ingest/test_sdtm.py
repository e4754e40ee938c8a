"""SDTM AE/LB/EX/DM rows (CSV and JSON) to canonical events, and the backfill endpoint's batching."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.adapters.sdtm import parse_sdtm
from services.ingest.normalise import InvalidBody
from services.ingest.sources import AuthConfig, AuthScheme, SourceConfig
from shared.clock import FakeClock
from shared.events import CLINICAL_ADAPTER, AeData, AeReported, DoseData, EnrollmentData, LabData
from shared.kafka import BrokerUnavailable, EventRecord
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import TRIAL, AppFactory, fixture_bytes

TOKEN = "backfill-token-0123456789abcdef"
SOURCE = SourceConfig(kind="sdtm", trial=TRIAL, auth=AuthConfig(scheme=AuthScheme.BEARER, secret=TOKEN))


def test_ae_csv_keeps_contradictions_partial_dates_and_missing_causality() -> None:
    outcome = parse_sdtm(fixture_bytes("sdtm/ae.csv"), content_type="text/csv", source=SOURCE)
    syncope, death, rash, fatigue = (r.event.data for r in outcome.records)
    assert isinstance(syncope, AeData) and syncope.seriousness is not None
    assert syncope.seriousness.ticked() == ["hospitalization"] and syncope.meddra_code == "10042772"
    assert isinstance(death, AeData)
    assert death.serious is False and death.grade == 5 and death.outcome == "FATAL"
    assert death.seriousness is not None and death.seriousness.death and death.seriousness.life_threatening
    assert "SERIOUS_FLAG_INCONSISTENT" in death.flags
    assert isinstance(rash, AeData)
    assert rash.onset == "2026-01" and rash.relatedness is None and rash.seriousness is None  # empty is unknown
    assert isinstance(fatigue, AeData) and fatigue.onset == "2025" and fatigue.grade == 1  # "Grade 1"
    assert fatigue.raw is not None and fatigue.raw["AEREL"] == "REMOTE"
    assert [r.record_key for r in outcome.records][:2] == [f"{TRIAL}:101-001:ae:AESEQ-1", f"{TRIAL}:101-001:ae:AESEQ-2"]
    assert all(r.assign_version for r in outcome.records)


def test_lb_json_units_censoring_and_not_done() -> None:
    outcome = parse_sdtm(fixture_bytes("sdtm/lb.json"), content_type="application/json", source=SOURCE)
    hgb, bili, plat = (r.event.data for r in outcome.records)
    assert isinstance(hgb, LabData) and (hgb.value, hgb.unit, hgb.baseline) == ("5.9", "mmol/L", True)
    assert hgb.raw is not None and hgb.raw["LBSTRESN"] == "95.07"  # the sender's standard result is kept raw
    assert isinstance(bili, LabData) and bili.value == "<0.2" and "CENSORED_VALUE" in bili.flags
    assert isinstance(plat, LabData) and plat.unit == "10^3/uL" and plat.raw is not None
    assert plat.raw["LBORRESU"] == "THOU/uL"
    assert outcome.ignored == ["101-001 LBSEQ-21: LBSTAT=NOT DONE"]


def test_ex_and_dm_rows() -> None:
    rows = [
        {
            "DOMAIN": "DM",
            "USUBJID": "101-003",
            "SITEID": "101",
            "ARMCD": "DL2",
            "RFICDTC": "2026-01-03",
            "RFXSTDTC": "2026-01-10",  # the first study treatment: not the CAR-T infusion
            "CARTDTC": "2025-11-28",
        },
        {
            "DOMAIN": "EX",
            "USUBJID": "101-003",
            "EXSEQ": 1,
            "EXSTDTC": "2026-01-10T09:30:00+01:00",
            "EXDOSE": 1,
            "EXDOSU": "10^6 cells/kg",
            "EXLOT": "UC-0042",
        },
    ]
    outcome = parse_sdtm(json.dumps({"rows": rows}).encode(), content_type="application/json", source=SOURCE)
    enrolment, dose = (r.event.data for r in outcome.records)
    assert isinstance(enrolment, EnrollmentData)
    assert (enrolment.arm, enrolment.enrolled_at, enrolment.car_t_infused_on) == (
        "DL2",
        date(2026, 1, 3),
        date(2025, 11, 28),
    )
    assert isinstance(dose, DoseData) and dose.lot == "UC-0042"
    assert outcome.records[0].event.header.site == "101"
    assert isinstance(dose, DoseData) and dose.number == 1 and dose.cells_per_kg == Decimal(1000000)


@pytest.mark.parametrize(
    ("rows", "pointer"),
    [
        ([{"DOMAIN": "AE", "USUBJID": "1", "AESEQ": 1}], ("rows", 0, "AETERM")),
        ([{"DOMAIN": "LB", "USUBJID": "1", "LBSEQ": 1, "LBTESTCD": "HGB", "LBORRES": "9"}], ("rows", 0, "LBDTC")),
        ([{"DOMAIN": "XX", "USUBJID": "1"}], ("rows", 0, "DOMAIN")),
        ([{"DOMAIN": "AE", "STUDYID": "OTHER", "USUBJID": "1", "AESEQ": 1, "AETERM": "X"}], ("rows", 0, "STUDYID")),
    ],
)
def test_row_errors_name_the_column(rows: list[dict[str, Any]], pointer: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidBody) as caught:
        parse_sdtm(json.dumps(rows).encode(), content_type="application/json", source=SOURCE)
    assert caught.value.errors[0]["loc"] == pointer


def lb_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "DOMAIN": "LB",
            "USUBJID": f"101-{n % 7:03d}",
            "LBSEQ": n,
            "LBTESTCD": "PLAT",
            "LBORRES": str(100 + n),
            "LBORRESU": "10^9/L",
            "LBDTC": "2026-01-21T08:00:00Z",
        }
        for n in range(count)
    ]


def _post(client: TestClient, rows: list[dict[str, Any]]) -> Any:
    return client.post(
        "/v1/sources/backfill/sdtm",
        content=json.dumps({"rows": rows}),
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )


@pytest.fixture
def backfill(make_client: AppFactory) -> TestClient:
    return make_client(
        {
            "sources": {
                "backfill": {
                    "kind": "sdtm",
                    "trial": TRIAL,
                    "auth": {"scheme": "bearer", "secret": TOKEN},
                    "max_body_bytes": 5_000_000,
                }
            }
        },
        publish_batch_size=40,
    )


def test_backfill_publishes_in_batches_keeps_subject_order_and_dedupes_a_repost(
    backfill: TestClient, publisher: FakePublisher
) -> None:
    rows = lb_rows(300)
    response = _post(backfill, rows)
    assert response.status_code == 202, response.text
    assert len(response.json()["accepted"]) == 300 and len(publisher.messages) == 300
    by_subject: dict[bytes, list[int]] = {}
    for _, key, value in publisher.messages:
        envelope = CLINICAL_ADAPTER.validate_json(value)
        assert isinstance(envelope.data, LabData)
        by_subject.setdefault(key, []).append(int(envelope.data.result_id.removeprefix("LBSEQ-")))
    assert all(seqs == sorted(seqs) for seqs in by_subject.values())
    again = _post(backfill, rows)
    assert again.status_code == 200 and len(again.json()["duplicates"]) == 300 and len(publisher.messages) == 300


def test_broker_failure_mid_backfill_records_what_was_acknowledged(
    backfill: TestClient, publisher: FakePublisher
) -> None:
    original = publisher.publish
    calls = 0

    async def flaky(topic: str, *, key: bytes, value: bytes, headers: Any = ()) -> None:
        nonlocal calls
        calls += 1
        if calls > 100:
            publisher.down = True
        await original(topic, key=key, value=value, headers=headers)

    publisher.publish = flaky  # type: ignore[method-assign]
    failed = _post(backfill, lb_rows(200))
    assert failed.status_code == 503 and failed.headers["retry-after"]
    assert "acknowledged before the failure" in failed.json()["detail"]
    published = len(publisher.messages)
    publisher.publish = original  # type: ignore[method-assign]
    publisher.down = False
    retry = _post(backfill, lb_rows(200))
    assert retry.status_code == 202
    assert len(retry.json()["duplicates"]) >= 80 and len(publisher.messages) == 200
    assert len({v for _, _, v in publisher.messages}) == 200 and published >= 80


def test_sdtm_ae_versions_are_numbered_by_ingest(
    backfill: TestClient, publisher: FakePublisher, clock: FakeClock
) -> None:
    row = {"DOMAIN": "AE", "USUBJID": "101-001", "AESEQ": 4, "AETERM": "Pyrexia", "AETOXGR": "1"}
    assert _post(backfill, [row]).status_code == 202
    assert _post(backfill, [{**row, "AETOXGR": "3", "AESER": "Y", "AESHOSP": "Y"}]).status_code == 202
    first, second = (CLINICAL_ADAPTER.validate_json(v) for _, _, v in publisher.messages)
    assert isinstance(first, AeReported) and isinstance(second, AeReported)
    assert (first.data.version, second.data.version) == (1, 2)
    assert first.data.first_received_at == second.data.first_received_at == clock.now()


def test_a_batch_failing_part_way_records_each_subjects_events_before_the_failure_and_a_resend_keeps_order(
    backfill: TestClient, publisher: FakePublisher
) -> None:
    """With a batch publisher: a failed ack in the first batch of 40 stops that subject there (its later events
    are not recorded, even if acknowledged); the other subjects' events of the batch are recorded; the next batch
    is never sent. The resend publishes only what was not recorded, so each subject's rows arrive in order."""
    rows = lb_rows(120)  # 7 subjects, batches of 40
    calls = 0
    failing_key: bytes | None = None

    async def publish_each(records: Sequence[EventRecord]) -> list[BrokerUnavailable | None]:
        nonlocal calls, failing_key
        calls += 1
        if calls > 1:
            raise BrokerUnavailable("broker is down (fake)")
        failing_key = records[10].key
        outcomes: list[BrokerUnavailable | None] = []
        for index, record in enumerate(records):
            publisher.messages.append((record.topic, record.key, record.value))  # the broker got every one
            failed = record.key == failing_key and index >= 10
            outcomes.append(BrokerUnavailable("no ack (fake)") if failed else None)
        return outcomes

    publisher.publish_each = publish_each  # type: ignore[attr-defined]
    failed = _post(backfill, rows)
    assert failed.status_code == 503 and "acknowledged before the failure" in failed.json()["detail"]
    del publisher.publish_each  # type: ignore[attr-defined]
    retry = _post(backfill, rows)
    assert retry.status_code == 202, retry.text
    recorded = len(retry.json()["duplicates"])
    stopped = sum(1 for _, key, _ in publisher.messages[:40] if key == failing_key) - sum(
        1 for _, key, _ in publisher.messages[:10] if key == failing_key
    )
    assert recorded == 40 - stopped and len(retry.json()["accepted"]) == 120 - recorded
    last_seen: dict[bytes, int] = {}
    for _, key, value in publisher.messages[40:]:  # the resend: each subject's rows in order, after what was kept
        envelope = CLINICAL_ADAPTER.validate_json(value)
        assert isinstance(envelope.data, LabData)
        seq = int(envelope.data.result_id.removeprefix("LBSEQ-"))
        assert seq > last_seen.get(key, -1)
        last_seen[key] = seq


def test_a_broker_lost_between_batches_leaves_the_earlier_batches_recorded_and_says_so(
    backfill: TestClient, publisher: FakePublisher
) -> None:
    calls = 0

    async def publish_each(records: Sequence[EventRecord]) -> list[BrokerUnavailable | None]:
        nonlocal calls
        calls += 1
        if calls > 1:  # what ManagedProducer raises when it is not connected (yet, or again)
            raise BrokerUnavailable("not connected to the Kafka broker (fake)")
        publisher.messages += [(r.topic, r.key, r.value) for r in records]
        return [None] * len(records)

    publisher.publish_each = publish_each  # type: ignore[attr-defined]
    failed = _post(backfill, lb_rows(120))
    assert failed.status_code == 503
    assert "40 event(s) were acknowledged before the failure" in failed.json()["detail"]
    del publisher.publish_each  # type: ignore[attr-defined]
    retry = _post(backfill, lb_rows(120))
    assert retry.status_code == 202 and len(retry.json()["duplicates"]) == 40
    assert len({value for _, _, value in publisher.messages}) == 120
