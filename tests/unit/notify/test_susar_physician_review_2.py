"""The safety physician's second review, through safety and notify together: what today's order-independent SUSAR
clock leaves in the report obligations (NCT07212335's three recipients: regulator, ethics committee,
investigators; 7 days fatal or life-threatening + completion by day 15, else 15 days; calendar days from the
sponsor's first awareness: ICH E2A III.A.2, EU CTR Art. 42(2), 21 CFR 312.32(c)).

A case where the system is right passes; one where it is wrong is xfail(strict) with the divergence in its reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlmodel import Session, select

from services.notify.models import Alert, Obligation, Timer
from services.notify.susar_alerts import SUSAR_COMPLETION, SUSAR_FOLLOW_UP, SUSAR_REPORT, days_after, report_due
from services.safety.expedited import cases
from shared.events import SusarData
from shared.protocol import ExpeditedReporting, Protocol
from tests.unit.notify.conftest import act
from tests.unit.notify.test_susar_clock_earlier import HOSP, Run, day
from tests.unit.safety.clinical import SIGNALS, ae

LIFE = HOSP | {"life_threatening": True}
FATAL = LIFE | {"death": True}


def assess(run: Run, what: str, value: str, now: datetime) -> list[Any]:
    """The sponsor's decision through safety's case service (as the officer API calls it), applied by notify."""
    with Session(run.driver.engine) as session, session.begin():
        common: dict[str, Any] = {
            "protocol": run.driver.protocol,
            "trial_id": "NCT07212335",
            "subject_id": "S-001",
            "ae_id": "AE-1",
            "actor": "sponsor-physician@example",
            "reason": "medical review",
            "now": now,
            "signals_topic": SIGNALS,
        }
        if what == "causality":
            _c, out = cases.record_causality(session, causality=value, **common)  # type: ignore[arg-type]
        else:
            _c, out = cases.record_expectedness(session, expectedness=value, **common)  # type: ignore[arg-type]
    run.notifier.clock.set(now)
    signals = [o.envelope for o in out]
    for signal in signals:
        run.notifier.apply(signal)
    run.signals += signals
    return signals


def recipients(protocol: Protocol) -> int:
    assert protocol.expedited_reporting is not None
    return len(protocol.expedited_reporting.recipients)


def changes(run: Run) -> list[tuple[str, datetime | None]]:
    return [
        (s.data.change, None if s.data.change == "withdrawn" else s.data.clock_start)
        for s in run.signals
        if str(getattr(s, "type", "")).startswith("susar.")
    ]


# --- a withdrawal, then the same stretch shown unbroken by a late version --------------------------------------


def fever_override_voided(run: Run) -> datetime:
    """Fever (RSI: expected up to grade 2), grade 3, hospitalised, probable, received day 1: a SUSAR (worse than the
    RSI lists). The officer overrides it to 'expected' on day 5: withdrawn, notify cancels the reports. v2 (grade 4)
    had been received on day 3 but is processed on day 6: the officer judged grade 3 while the sponsor held grade 4,
    so the override is void (the system's own rule) and the case was a SUSAR all along: day 0 is day 1."""
    fever: dict[str, Any] = {"term": "Fever", "relatedness": "probable", "seriousness": HOSP}
    run.deliver([ae("S-001", grade=3, received=day(1), **fever)])
    assess(run, "expectedness", "expected", day(5))
    run.deliver([ae("S-001", version=2, grade=4, received=day(3), **fever)], now=day(6))
    return day(1)


def causality_reversed_then_site_probable(run: Run) -> datetime:
    """Site 'unlikely' (day 1, hospitalised pneumonitis). The sponsor says 'related' on day 2 (a SUSAR from the
    decision), then 'not related' on day 4 (withdrawn). The site's v2 'probable', received on day 3, is processed on
    day 5: from day 3 the site's word keeps the case a SUSAR whatever the sponsor says (CT-3 7.2.3.1), so the case
    never stopped qualifying after day 2: day 0 is day 2."""
    common: dict[str, Any] = {"term": "Pneumonitis", "grade": 3, "seriousness": HOSP}
    run.deliver([ae("S-001", relatedness="unlikely", received=day(1), **common)])
    assess(run, "causality", "related", day(2))
    assess(run, "causality", "not_related", day(4))
    run.deliver([ae("S-001", version=2, relatedness="probable", received=day(3), **common)], now=day(5))
    return day(2)


@pytest.mark.parametrize("scenario", [fever_override_voided, causality_reversed_then_site_probable])
def test_a_susar_redetected_with_its_old_day_0_has_open_reports_again(
    protocol: Protocol, tmp_path: Path, scenario: Any
) -> None:
    run = Run(tmp_path, scenario.__name__, protocol)
    day0 = scenario(run)
    assert changes(run)[-2:] == [("withdrawn", None), ("detected", day0)], "safety is right: detected at the old day 0"
    open_reports = [d for d in run.deadlines() if d[0] == SUSAR_REPORT and d[4] in ("open", "overdue")]
    assert len(open_reports) == recipients(protocol)
    assert {d[3] for d in open_reports} == {day0 + timedelta(days=15)}
    [alert] = run.notifier.rows(Alert)
    assert alert.state == "open", "paged again"
    history = [e.action for e in run.notifier.history(alert.id)]
    assert history.count("obligation_reopened") == recipients(protocol)
    assert history[-1] != "susar_withdrawn"
    reopened = {o.id for o in run.notifier.rows(Obligation) if o.kind == SUSAR_REPORT and o.state == "open"}
    overdue = {t.obligation_id for t in run.notifier.rows(Timer, kind="overdue", state="pending")}
    assert reopened <= overdue, "each reopened report will page when overdue"


# --- fatal known first, the earlier life-threatening version processed later --------------------------------------


def test_fatal_known_first_then_the_earlier_life_threatening_version_moves_the_7_day_deadline(
    protocol: Protocol, tmp_path: Path
) -> None:
    """v1 hospitalised (day 1), v2 life-threatening (day 3), v3 fatal (day 5); v2 processed on day 6. Right: the
    report is due 7 days after the first knowledge of 'life-threatening' (day 10, not day 12), the completion 15 days
    after it (day 18), and the officer is told the deadlines moved (EU CTR Art. 42(2)(c))."""
    common: dict[str, Any] = {"term": "Pneumonitis", "relatedness": "possible"}
    v1 = ae("S-001", version=1, grade=3, seriousness=HOSP, received=day(1), **common)
    v2 = ae("S-001", version=2, grade=4, seriousness=LIFE, received=day(3), **common)
    v3 = ae("S-001", version=3, grade=5, seriousness=FATAL, outcome="fatal", received=day(5), **common)
    run = Run(tmp_path, "lt-late", protocol)
    run.deliver([v1, v3])
    assert {(d[0], d[3]) for d in run.deadlines()} == {(SUSAR_REPORT, day(12)), (SUSAR_COMPLETION, day(20))}
    run.deliver([v2], now=day(6))
    assert changes(run) == [("detected", day(1)), ("upgraded", day(1)), ("clock_earlier", day(1))]
    assert {(d[0], d[3]) for d in run.deadlines()} == {(SUSAR_REPORT, day(10)), (SUSAR_COMPLETION, day(18))}
    assert len(run.deadlines()) == 2 * recipients(protocol)
    [alert] = run.notifier.rows(Alert)
    assert "susar_clock_earlier" in [e.action for e in run.notifier.history(alert.id)]


# --- a report already filed when a late version moves day 0 before the filing ---------------------------------


def test_a_filed_report_that_a_late_version_makes_late_is_recorded_as_late(protocol: Protocol, tmp_path: Path) -> None:
    common: dict[str, Any] = {"term": "Pneumonitis", "relatedness": "possible", "seriousness": HOSP}
    run = Run(tmp_path, "filed-late", protocol)
    run.deliver([ae("S-001", version=3, grade=4, received=day(20), **common)])
    run.notifier.clock.set(day(25))
    with Session(run.notifier.engine) as session:
        alert = session.exec(select(Alert)).one()
        rows = session.exec(select(Obligation)).all()
    for row in rows:
        act(run.notifier, "complete", alert=alert, obligation=row, actor="officer", reference=f"EV-{row.id[:4]}")
    run.deliver([ae("S-001", version=2, grade=3, received=day(1), **common)], now=day(26))
    assert changes(run)[-1] == ("clock_earlier", day(1)), "safety is right"
    entries = [e for e in run.notifier.history(alert.id) if e.action == "susar_clock_earlier"]
    assert entries, "the alert's history says day 0 moved"
    assert day(16).isoformat() in entries[-1].detail and "late" in entries[-1].detail.lower()


# --- a report filed, then the case withdrawn and detected again --------------------------------------------------


def test_a_filed_susar_withdrawn_and_restored_is_followed_up_not_reported_again(
    protocol: Protocol, tmp_path: Path
) -> None:
    common: dict[str, Any] = {"term": "Pneumonitis", "grade": 3, "seriousness": HOSP}
    run = Run(tmp_path, "filed-restored", protocol)
    run.deliver([ae("S-001", relatedness="possible", received=day(1), **common)])
    run.notifier.clock.set(day(2))
    with Session(run.notifier.engine) as session:
        alert = session.exec(select(Alert)).one()
        rows = session.exec(select(Obligation)).all()
    for row in rows:
        act(run.notifier, "complete", alert=alert, obligation=row, actor="officer", reference=f"EV-{row.id[:4]}")
    run.deliver([ae("S-001", version=2, relatedness="not_related", received=day(3), **common)])
    run.deliver([ae("S-001", version=3, relatedness="probable", received=day(5), **common)])
    assert changes(run) == [("detected", day(1)), ("withdrawn", None), ("detected", day(5))], "safety's signals"
    initial = [d for d in run.deadlines() if d[0] == SUSAR_REPORT]
    assert len(initial) == recipients(protocol), "one initial report per recipient, the filed one"
    assert {d[0] for d in run.deadlines() if d[4] == "open"} == {SUSAR_FOLLOW_UP}


# --- calendar days at the sponsor's midnight ------------------------------------------------------------------------


def _susar(clock_start: datetime, *, fatal: bool) -> SusarData:
    return SusarData.model_validate(
        {
            "case_id": "c",
            "site_id": "SITE-1",
            "subject_id": "S-001",
            "ae_id": "AE-1",
            "ae_version": 1,
            "report_version": 1,
            "term": "Pneumonitis",
            "meddra_code": None,
            "grade": 5 if fatal else 3,
            "criteria": ["death"] if fatal else ["hospitalization"],
            "fatal_or_life_threatening": fatal,
            "site_relatedness": "possible",
            "sponsor_causality": None,
            "expectedness": "unexpected",
            "expectedness_basis": "rsi_proposal",
            "rsi_version": "2.0",
            "change": "detected",
            "clock_start": clock_start,
            "clock_basis": "receipt",
            "upgraded_at": None,
            "changed_at": clock_start,
            "reason": "r",
            "source_event_id": "evt-1",
        }
    )


def test_a_deadline_counted_from_a_late_evening_receipt_stays_inside_calendar_day_7(protocol: Protocol) -> None:
    """Received 23:30 at a sponsor on UTC+1 (22:30 UTC) in a week without a clock change: due 23:30 local on day 7,
    inside calendar day 7 (never the next UTC date's midnight)."""
    rules = protocol.expedited_reporting
    assert rules is not None
    paris = ZoneInfo("Europe/Paris")
    received = datetime(2026, 3, 10, 23, 30, tzinfo=paris)
    due = report_due(_susar(received, fatal=True), rules).astimezone(paris)
    assert (due.date().isoformat(), due.time().isoformat()) == ("2026-03-17", "23:30:00")


def test_a_deadline_across_the_spring_clock_change_stays_inside_calendar_day_7(protocol: Protocol) -> None:
    """A fatal SUSAR received 23:30 on 25 March 2026 by a sponsor in Europe/Paris: calendar day 7 is 1 April,
    ending 24:00 CEST (22:00 UTC). Counted in 24 h days the deadline was 00:30 CEST on 2 April (calendar day 8, ICH
    E2A III.A.2 'calendar days'); with the protocol's sponsor time zone it is 23:30 CEST on 1 April."""
    assert protocol.expedited_reporting is not None
    rules = protocol.expedited_reporting.model_copy(update={"time_zone": "Europe/Paris"})
    paris = ZoneInfo("Europe/Paris")
    received = datetime(2026, 3, 25, 23, 30, tzinfo=paris)
    end_of_day_7 = datetime(2026, 4, 2, 0, 0, tzinfo=paris).astimezone(UTC)
    due = report_due(_susar(received, fatal=True), rules)
    assert due <= end_of_day_7
    assert due == datetime(2026, 4, 1, 23, 30, tzinfo=paris)


def test_calendar_days_in_the_sponsor_zone_keep_the_wall_clock_time_and_take_a_skipped_time_early() -> None:
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2026, 3, 22, 2, 30, tzinfo=paris)  # 29 March 02:30 does not exist in Paris
    # read at either side's offset, 02:30 is 00:30 or 01:30 UTC: the earlier one, never an hour late
    assert days_after(start, 7, "Europe/Paris") == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    autumn = datetime(2026, 10, 18, 2, 30, tzinfo=paris)  # 25 October 02:30 happens twice: the first one
    assert days_after(autumn, 7, "Europe/Paris") == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert days_after(start, 7, None) == start.astimezone(UTC) + timedelta(days=7)  # no zone: 24 h days


RECIPIENT = {"id": "regulator", "kind": "regulator", "name": "National competent authority"}


def test_a_protocol_names_a_time_zone_that_exists() -> None:
    with pytest.raises(ValidationError, match="unknown time zone 'Europe/Pariss'"):
        ExpeditedReporting.model_validate({"recipients": [RECIPIENT], "time_zone": "Europe/Pariss"})
    assert ExpeditedReporting.model_validate({"recipients": [RECIPIENT], "time_zone": "Asia/Shanghai"}).time_zone
