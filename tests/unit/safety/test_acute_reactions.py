"""The 24-hour acute-reaction window (pure): onset with a time, onset with a date only, its boundaries, and
when an acute reaction is news."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from services.safety.acute_reactions import Infusion, decide, match_infusion
from shared.protocol import AcuteReactions

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIRST = Infusion("D1", 1, START, date(2026, 3, 2))
SECOND = Infusion("D2", 2, START + timedelta(days=7), date(2026, 3, 9))
RULES = AcuteReactions()  # 24 h, grade >= 2, DLT grade 3, date-only onsets count


def acute(onset_at: datetime | None = None, onset: str | None = None, rules: AcuteReactions = RULES) -> Infusion | None:
    match = match_infusion(onset_at=onset_at, onset=onset, infusions=[FIRST, SECOND], rules=rules)
    return match.infusion if match else None


def test_onset_exactly_24_hours_after_the_start_is_acute() -> None:
    match = match_infusion(onset_at=START + timedelta(hours=24), onset=None, infusions=[FIRST], rules=RULES)
    assert match is not None and match.precision == "time" and match.hours_after == Decimal("24.0")
    assert acute(START + timedelta(hours=24, seconds=1)) is None
    assert acute(START) == FIRST  # at the start of the infusion
    assert acute(START - timedelta(minutes=1)) is None  # before the infusion: not a reaction to it


def test_the_onset_offset_is_honoured() -> None:
    paris = timezone(timedelta(hours=1))
    assert acute(datetime(2026, 3, 3, 9, 59, tzinfo=paris)) == FIRST  # 08:59 UTC next day: 23.98 h
    assert acute(datetime(2026, 3, 3, 10, 1, tzinfo=paris)) is None


def test_the_latest_infusion_before_the_onset_is_the_one_reacted_to() -> None:
    assert acute(START + timedelta(days=7, hours=2)) == SECOND
    longer = AcuteReactions(window_hours=24 * 8)
    assert acute(START + timedelta(days=7, hours=2), rules=longer) == SECOND


def test_a_date_only_onset_counts_on_the_infusion_day_and_the_next() -> None:
    assert acute(onset="2026-03-02") == FIRST
    match = match_infusion(onset_at=None, onset="2026-03-03", infusions=[FIRST], rules=RULES)
    assert match is not None and match.precision == "date" and match.hours_after is None
    assert "no time recorded" in match.reason
    assert acute(onset="2026-03-04") is None
    assert acute(onset="2026-03-01") is None
    assert acute(onset="2026-03") is None, "a month is not a day: never matched"
    assert acute(onset="2026-03-02", rules=AcuteReactions(date_only_onset="ignored")) is None
    assert acute(onset="2026-03-04", rules=AcuteReactions(window_hours=36)) == FIRST  # 36 h reaches day + 2


def test_alerted_from_grade_2_and_again_only_when_worse() -> None:
    onset_at = START + timedelta(hours=3)

    def run(grade: int | None, signalled: int | None, rules: AcuteReactions = RULES) -> tuple[bool, bool]:
        d = decide(
            grade=grade, onset_at=onset_at, onset=None, infusions=[FIRST], rules=rules, signalled_grade=signalled
        )
        return d.signal, d.dlt_grade

    assert run(1, None) == (False, False)
    assert run(2, None) == (True, False)
    assert run(2, 2) == (False, False)
    assert run(3, 2) == (True, True)  # worse, and at the DLT criteria's grade
    assert run(None, None) == (False, False), "no grade: nothing to alert on yet"
    assert run(2, None, AcuteReactions(min_grade=3)) == (False, False)


def test_outside_the_window_nothing_is_signalled_whatever_the_grade() -> None:
    d = decide(
        grade=4,
        onset_at=START + timedelta(hours=30),
        onset=None,
        infusions=[FIRST],
        rules=RULES,
        signalled_grade=None,
    )
    assert d.match is None and not d.signal
