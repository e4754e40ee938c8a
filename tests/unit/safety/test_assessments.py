"""Missed assessments: the visit schedule (pure) and the sweep that flags each miss once, via the outbox."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from services.safety.assessments import Visit, missed_visits, missing_kinds, schedule
from services.safety.dlt_window import StudyCalendar
from services.safety.models import MissedAssessment
from services.safety.sweep import run_sweep
from shared.events import AssessmentMissed
from shared.outbox import OutboxMessage
from shared.protocol import Assessment, Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, ae, dose, enrol, lab, status

CALENDAR = StudyCalendar(date(2026, 3, 2), 0, timedelta(0))
"""Day 0 on 2026-03-02 at a UTC site: 'day 7' is 2026-03-09."""
WEEK_1 = Assessment(name="week 1", day=7, window_days=2)
WEEK_4 = Assessment(name="week 4", day=28, window_days=3, kinds=["lab", "ae"])


def test_a_visit_spans_whole_days_around_its_day() -> None:
    [visit] = schedule([WEEK_1], calendar=CALENDAR)
    assert visit.due_from == datetime(2026, 3, 7, tzinfo=UTC)  # day 7 after the anchor, minus 2
    assert visit.due_until == datetime(2026, 3, 12, tzinfo=UTC)  # through 2026-03-11 inclusive
    assert visit.contains(datetime(2026, 3, 11, 23, 59, tzinfo=UTC))
    assert not visit.contains(datetime(2026, 3, 12, tzinfo=UTC))
    assert not visit.contains(datetime(2026, 3, 6, 23, 59, tzinfo=UTC))


def test_missing_kinds() -> None:
    [visit] = schedule([WEEK_4], calendar=CALENDAR)
    inside = datetime(2026, 3, 30, 8, tzinfo=UTC)
    assert missing_kinds(visit, lab_times=[], ae_times=[]) == ["lab", "ae"]
    assert missing_kinds(visit, lab_times=[], ae_times=[inside]) == ["lab"]
    assert missing_kinds(visit, lab_times=[inside], ae_times=[]) == [], "a subject seen for labs was seen"
    assert missing_kinds(visit, lab_times=[inside - timedelta(days=10)], ae_times=[]) == ["lab", "ae"]


def test_a_visit_is_missed_only_after_its_window_and_only_once() -> None:
    visits: list[Visit] = schedule([WEEK_1, WEEK_4], calendar=CALENDAR)
    during = datetime(2026, 3, 11, 12, tzinfo=UTC)
    assert missed_visits(visits, now=during, lab_times=[], ae_times=[], flagged=set()) == []
    after = datetime(2026, 3, 12, tzinfo=UTC)
    [miss] = missed_visits(visits, now=after, lab_times=[], ae_times=[], flagged=set())
    assert (miss.visit.name, miss.missing) == ("week 1", ["lab"])
    assert missed_visits(visits, now=after, lab_times=[], ae_times=[], flagged={"week 1"}) == []


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def outbox_count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(OutboxMessage)).scalar_one())


def test_the_sweep_flags_each_missed_visit_once_through_the_outbox(driver: Driver) -> None:
    driver.apply_all([enrol("A-1", "A", date(2026, 3, 2)), dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC))])
    driver.apply(
        lab("A-1", result_id="R-7", test="NEUT", value="1.0", lln="2.0", collected_at=datetime(2026, 3, 9, tzinfo=UTC))
    )
    now = datetime(2026, 3, 20, tzinfo=UTC)  # week 1 (days 5-9) and week 2 (days 12-16) are over
    signals = run_sweep(driver.engine, protocol=driver.protocol, now=now, signals_topic=SIGNALS)
    missed = [o.envelope for o in signals if isinstance(o.envelope, AssessmentMissed)]
    vitals_gap = next(m for m in missed if m.data.assessment == "infusion 1 vital signs")  # no vitals were posted
    assert vitals_gap.data.category == "visit"
    visits = [m for m in missed if m.data.assessment.startswith("week")]  # the immunology samples are flagged too
    assert [(m.data.assessment, m.data.missing) for m in visits] == [("week 2", ["lab"])]
    assert visits[0].data.due_from == datetime(2026, 3, 14, tzinfo=UTC)
    assert visits[0].data.due_until == datetime(2026, 3, 19, tzinfo=UTC)
    assert {s.key for s in signals} == {b"NCT07212335:A-1"}
    assert outbox_count(driver.engine) == len(signals)
    assert run_sweep(driver.engine, protocol=driver.protocol, now=now, signals_topic=SIGNALS) == []
    assert outbox_count(driver.engine) == len(signals)
    with Session(driver.engine) as session:
        row = session.get(MissedAssessment, ("NCT07212335", "A-1", "week 2"))
        assert row is not None and row.missing == ["lab"]


def test_labs_entered_in_error_do_not_count_and_an_ae_report_is_not_the_visits_ae_review(driver: Driver) -> None:
    driver.apply_all([enrol("A-1", "A", date(2026, 3, 2)), dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC))])
    visit_day = datetime(2026, 3, 30, 9, tzinfo=UTC)  # week 4: days 25-31
    driver.apply(lab("A-1", result_id="R-28", test="NEUT", value="1.0", lln="2.0", collected_at=visit_day))
    driver.apply(status("A-1", "lab", "R-28"))
    driver.apply(ae("A-1", grade=1, onset="2026-03-29", received=visit_day))
    now = datetime(2026, 4, 3, tzinfo=UTC)
    signals = run_sweep(driver.engine, protocol=driver.protocol, now=now, signals_topic=SIGNALS)
    by_name = {
        o.envelope.data.assessment: o.envelope.data.missing for o in signals if o.envelope.type == "assessment.missed"
    }  # type: ignore[attr-defined]
    assert by_name["week 4"] == ["lab", "ae"], "the shipped protocol accepts only an AE review record"


def test_subjects_without_an_anchor_or_taken_back_are_not_swept(driver: Driver) -> None:
    driver.apply(enrol("A-1", "A", date(2026, 3, 2)))  # no infusion: no anchor
    driver.apply_all([enrol("A-2", "A", date(2026, 3, 2)), dose("A-2", datetime(2026, 3, 2, 10, tzinfo=UTC))])
    driver.apply(status("A-2", "enrollment", "A-2"))
    signals = run_sweep(
        driver.engine, protocol=driver.protocol, now=datetime(2026, 9, 1, tzinfo=UTC), signals_topic=SIGNALS
    )
    assert [o for o in signals if o.envelope.type == "assessment.missed"] == []  # type: ignore[attr-defined]
