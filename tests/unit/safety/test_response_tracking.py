"""Transfusions, samples and the response through safety's service layer: stored, recomputed on every datum and
at the week-4/8 timepoints, a loss signalled once, missed immunology samples flagged once to the site."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session

from services.safety.dlt_window import StudyCalendar
from services.safety.main import create_app
from services.safety.models import LabResult, ResponseStateRow, SampleRecord, TransfusionRecord
from services.safety.samples import missed_samples, sample_visits
from services.safety.settings import SafetySettings
from services.safety.sweep import run_sweep
from shared.clock import FakeClock
from shared.events import (
    AssessmentMissed,
    ResponseLost,
    SampleCollected,
    SampleData,
    TransfusionAdministered,
    TransfusionData,
)
from shared.protocol import Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, _common, dose, enrol, lab, of_type, status

TOKEN = "viewer-token-0123456789abcdef"
VIEWER = {"authorization": f"Bearer {TOKEN}"}
DAY0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
D = timedelta(days=1)


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    d = Driver(engine, protocol)
    d.apply_all([enrol("A-1", "A", date(2026, 3, 2)), dose("A-1", DAY0)])
    return d


def transfusion(subject: str, tid: str, at: datetime, product: str = "platelets") -> TransfusionAdministered:
    data = TransfusionData.model_validate({"transfusion_id": tid, "product": product, "administered_at": at})
    return TransfusionAdministered(**_common("NCT07212335", subject, f"tx-{tid}", at), data=data)


def sample(subject: str, sid: str, at: datetime, kind: str = "immunology") -> SampleCollected:
    data = SampleData(sample_id=sid, kind=kind, collected_at=at)
    return SampleCollected(**_common("NCT07212335", subject, f"sample-{sid}", at), data=data)


def cbc(
    driver: Driver, at: datetime, *, anc: str = "2.0", plt: str = "150", hgb: str = "12.0", now: Any = None
) -> list:
    tag = at.strftime("%m%d%H%M")
    signals = []
    for test, value, unit in (("NEUT", anc, "10^9/L"), ("PLAT", plt, "10^9/L"), ("HGB", hgb, "g/dL")):
        signals += driver.apply(
            lab("A-1", result_id=f"{test}-{tag}", test=test, value=value, unit=unit, collected_at=at), now=at
        )
    return signals


def current(engine: Engine) -> ResponseStateRow:
    with Session(engine) as session:
        row = session.get(ResponseStateRow, ("NCT07212335", "A-1", "current"))
        assert row is not None
        return row


def test_a_confirmed_response_is_stored_and_its_loss_by_transfusion_signalled_once(driver: Driver) -> None:
    cbc(driver, DAY0 + 20 * D)
    assert current(driver.engine).awaiting == "complete"
    cbc(driver, DAY0 + 22 * D)  # exactly 48 h later
    row = current(driver.engine)
    assert (row.level, row.since, row.confirmed_at) == ("complete", DAY0 + 20 * D, DAY0 + 22 * D)
    signals = driver.apply(transfusion("A-1", "TX-1", DAY0 + 30 * D, "red_cells"), now=DAY0 + 30 * D)
    [lost] = of_type(signals, "response.lost")
    assert isinstance(lost, ResponseLost)
    assert (lost.data.previous_level, lost.data.level, lost.data.lost_at) == ("complete", "none", DAY0 + 30 * D)
    assert lost.data.duration_days == Decimal("10.0")
    assert "red cells transfusion" in lost.data.reason
    assert driver.apply(transfusion("A-1", "TX-1", DAY0 + 30 * D, "red_cells"), now=DAY0 + 31 * D) == []
    with Session(driver.engine) as session:
        assert session.get(TransfusionRecord, ("NCT07212335", "A-1", "TX-1")) is not None


def test_a_transfusion_entered_in_error_no_longer_counts(driver: Driver) -> None:
    driver.apply(transfusion("A-1", "TX-9", DAY0 + 19 * D))
    cbc(driver, DAY0 + 20 * D)
    cbc(driver, DAY0 + 22 * D)
    assert current(driver.engine).level == "none", "transfused the day before the first count"
    driver.apply(status("A-1", "transfusion", "TX-9"), now=DAY0 + 23 * D)
    assert current(driver.engine).level == "complete"


def test_a_low_count_after_a_response_signals_the_loss(driver: Driver) -> None:
    cbc(driver, DAY0 + 10 * D, anc="1.2", plt="60", hgb="9.0")
    cbc(driver, DAY0 + 12 * D, anc="1.2", plt="60", hgb="9.0")
    assert current(driver.engine).level == "partial"
    signals = driver.apply(
        lab("A-1", result_id="PLAT-x", test="PLAT", value="<20", unit="10^9/L", collected_at=DAY0 + 15 * D),
        now=DAY0 + 15 * D,
    )
    [lost] = of_type(signals, "response.lost")
    assert (lost.data.previous_level, lost.data.level) == ("partial", "none")
    assert "platelets" in lost.data.reason


def test_the_sweep_records_the_week_4_and_week_8_timepoints(driver: Driver) -> None:
    cbc(driver, DAY0 + 20 * D)
    cbc(driver, DAY0 + 23 * D)
    week5 = datetime(2026, 4, 5, tzinfo=UTC)
    run_sweep(driver.engine, protocol=driver.protocol, now=week5, signals_topic=SIGNALS)
    with Session(driver.engine) as session:
        week4 = session.get(ResponseStateRow, ("NCT07212335", "A-1", "week 4"))
        assert session.get(ResponseStateRow, ("NCT07212335", "A-1", "week 8")) is None, "not yet"
    assert week4 is not None
    # Day 28 is 2026-03-30 (infusion day 0); the timepoint is the end of that site day.
    assert week4.as_of == datetime(2026, 3, 31, tzinfo=UTC)
    assert (week4.level, week4.duration_days) == ("complete", "8.6")


def test_missed_immunology_samples_are_flagged_once_to_the_site(driver: Driver) -> None:
    driver.apply(sample("A-1", "S-0", DAY0 - 2 * D))  # baseline, before the infusion
    driver.apply(sample("A-1", "S-1", DAY0 + 8 * D))  # week 1
    now = DAY0 + 40 * D  # weeks 1 and 4 are over
    signals = run_sweep(driver.engine, protocol=driver.protocol, now=now, signals_topic=SIGNALS)
    samples = [
        o.envelope for o in signals if isinstance(o.envelope, AssessmentMissed) and o.envelope.data.category == "sample"
    ]
    assert [s.data.assessment for s in samples] == ["immunology sample: week 4"]
    assert samples[0].data.missing == ["sample"]
    again = run_sweep(driver.engine, protocol=driver.protocol, now=now + D, signals_topic=SIGNALS)
    assert not [o for o in again if isinstance(o.envelope, AssessmentMissed) and o.envelope.data.category == "sample"]
    with Session(driver.engine) as session:
        assert session.get(SampleRecord, ("NCT07212335", "A-1", "S-1")) is not None


def test_a_baseline_sample_after_the_infusion_is_not_a_baseline(protocol: Protocol) -> None:
    [schedule] = protocol.samples
    calendar = StudyCalendar(date(2026, 3, 2), 0, timedelta(0))
    visits = sample_visits(schedule, calendar=calendar, first_infusion=DAY0)
    baseline = visits[0]
    assert (baseline.name, baseline.due_from, baseline.due_until) == (
        "immunology sample: baseline",
        datetime(2026, 2, 16, tzinfo=UTC),
        DAY0,
    )
    after = missed_samples(visits[:1], now=DAY0 + D, collected=[DAY0], flagged=set())
    assert [m.visit.name for m in after] == ["immunology sample: baseline"], "drawn at the infusion: too late"
    assert missed_samples(visits[:1], now=DAY0 + D, collected=[DAY0 - timedelta(seconds=1)], flagged=set()) == []
    week1 = visits[1]  # day 7 +/- 2: 2026-03-07 to the end of 2026-03-11
    assert (week1.due_from, week1.due_until) == (datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=UTC))


def test_the_response_endpoint(driver: Driver, tmp_path: Path, clean_env: None) -> None:
    cbc(driver, DAY0 + 20 * D)
    cbc(driver, DAY0 + 22 * D)
    driver.apply(sample("A-1", "S-1", DAY0 + 8 * D))
    settings = SafetySettings(var_dir=tmp_path, api_tokens={TOKEN: {"user": "v", "role": "viewer"}})
    app = create_app(settings, registry=CollectorRegistry(), clock=FakeClock(DAY0 + 30 * D))
    app.state.engine = driver.engine
    client = TestClient(app)  # no lifespan: no broker needed to read
    body = client.get("/v1/trials/NCT07212335/subjects/A-1/response", headers=VIEWER).json()
    assert body["current"]["level"] == "complete"
    assert Decimal(body["current"]["duration_days"]) == Decimal("10.0")
    assert [t["name"] for t in body["timepoints"]] == ["week 4"]
    assert body["timepoints"][0]["level"] == "complete"
    assert [s["sample_id"] for s in body["samples"]] == ["S-1"]
    missing = client.get("/v1/trials/NCT07212335/subjects/nobody/response", headers=VIEWER)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_a_late_transfusion_dated_inside_the_run_takes_the_response_back(driver: Driver) -> None:
    cbc(driver, DAY0 + 20 * D)
    cbc(driver, DAY0 + 22 * D)
    assert current(driver.engine).level == "complete"
    late = DAY0 + 25 * D
    signals = driver.apply(transfusion("A-1", "TX-late", DAY0 + 21 * D), now=late)  # entered days after it was given
    [lost] = of_type(signals, "response.lost")
    assert (lost.data.lost_at, lost.data.previous_since) == (late, DAY0 + 20 * D)
    assert "no longer confirmed" in lost.data.reason


def test_results_drawn_minutes_apart_are_one_count_and_a_repeat_is_another(driver: Driver) -> None:
    first, second = DAY0 + 20 * D, DAY0 + 22 * D
    for day, at in ((20, first), (22, second)):
        for i, (test, value, unit) in enumerate(
            (("NEUT", "2.0", "10^9/L"), ("PLAT", "150", "10^9/L"), ("HGB", "120", "g/L"))
        ):
            taken = at + timedelta(minutes=20 * i)  # typed 0, 20 and 40 minutes after the first
            result = lab("A-1", result_id=f"{test}-{day}", test=test, value=value, unit=unit, collected_at=taken)
            driver.apply(result, now=taken)
    row = current(driver.engine)
    assert (row.level, row.since, row.confirmed_at) == ("complete", first, second)
    driver.apply(
        lab(
            "A-1",
            result_id="NEUT-22b",
            test="NEUT",
            value="0.8",
            unit="10^9/L",
            collected_at=second + timedelta(minutes=30),
        ),
        now=second + D,
    )
    assert current(driver.engine).level == "none", "a repeat ANC half an hour later is a count of its own, below PR"


def test_no_sample_is_asked_of_a_subject_after_they_left_the_study(protocol: Protocol) -> None:
    [schedule] = protocol.samples
    calendar = StudyCalendar(date(2026, 3, 2), 0, timedelta(0))
    visits = sample_visits(schedule, calendar=calendar, first_infusion=DAY0)
    late = DAY0 + 90 * D
    everything = missed_samples(visits, now=late, collected=[], flagged=set())
    assert len(everything) == 4
    withdrawn_day_20 = missed_samples(visits, now=late, collected=[], flagged=set(), left_study_at=DAY0 + 20 * D)
    assert [m.visit.name for m in withdrawn_day_20] == ["immunology sample: baseline", "immunology sample: week 1"]


def test_a_corrected_transfusion_replaces_the_stored_one_and_the_audit_keeps_the_old_time(driver: Driver) -> None:
    from sqlmodel import select

    from shared.audit import AuditEntry

    driver.apply(transfusion("A-1", "TX-5", DAY0 + 5 * D))
    corrected = transfusion("A-1", "TX-5", DAY0 + 6 * D)
    assert driver.apply(corrected, now=DAY0 + 7 * D) == []
    with Session(driver.engine) as session:
        row = session.get(TransfusionRecord, ("NCT07212335", "A-1", "TX-5"))
        assert row is not None and row.administered_at == DAY0 + 6 * D
        [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == "transfusion.corrected")).all()
    assert entry.entity == "transfusion/NCT07212335/A-1/TX-5"
    assert entry.detail["before"] == {"administered_at": (DAY0 + 5 * D).isoformat()}


def test_a_haemoglobin_above_its_upper_limit_still_counts(driver: Driver) -> None:
    """Graded as "Hemoglobin increased" (above the ULN), it is still the haemoglobin lineage of the count."""
    for day in (20, 22):
        at = DAY0 + day * D
        for test, value, unit, lln, uln in (
            ("NEUT", "2.0", "10^9/L", None, None),
            ("PLAT", "150", "10^9/L", None, None),
            ("HGB", "175", "g/L", "120", "160"),
        ):
            driver.apply(
                lab("A-1", result_id=f"{test}-{day}", test=test, value=value, unit=unit, lln=lln, collected_at=at)
                if uln is None
                else lab_with_uln(test, day, value, unit, lln, uln, at),
                now=at,
            )
    with Session(driver.engine) as session:
        hgb = session.get(LabResult, ("NCT07212335", "A-1", "HGB-22"))
    assert hgb is not None and hgb.term == "Hemoglobin increased"
    assert current(driver.engine).level == "complete"


def lab_with_uln(test: str, day: int, value: str, unit: str, lln: str, uln: str, at: datetime) -> Any:
    envelope = lab("A-1", result_id=f"{test}-{day}", test=test, value=value, unit=unit, lln=lln, collected_at=at)
    return envelope.model_copy(update={"data": envelope.data.model_copy(update={"uln": Decimal(uln)})})
