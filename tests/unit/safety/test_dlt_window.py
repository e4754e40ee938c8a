"""DLT window arithmetic: day 1 is the anchor day, onset on day <= window_days is inside; exact UTC instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.safety.assessments import schedule
from services.safety.dlt_window import (
    DltWindow,
    Infusion,
    enrolment_window,
    infusion_window,
    partial_date_range,
    place_onset,
    site_date,
    subject_window,
)
from shared.protocol import Assessment

offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=offsets)
window_days = st.integers(min_value=1, max_value=365)


def window_at(moment: datetime, days: int = 28) -> DltWindow:
    return infusion_window(first_infusion=moment, site_day=site_date(moment), days=days)


def test_day_28_is_inside_and_day_29_outside() -> None:
    window = window_at(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    assert place_onset(window, "2026-03-02").inside  # day 1: the infusion day
    assert place_onset(window, "2026-03-29").inside  # day 28
    day_29 = place_onset(window, "2026-03-30")
    assert not day_29.inside and "study day 29" in day_29.explanation
    day_0 = place_onset(window, "2026-03-01")
    assert not day_0.inside and "study day 0" in day_0.explanation
    assert window.end == datetime(2026, 3, 30, 0, 0, tzinfo=UTC)  # day 28 ends at the site's midnight
    assert window.last_day == date(2026, 3, 29)


def test_the_site_date_of_the_infusion_is_day_1_whatever_its_utc_date() -> None:
    # 23:30 in New York is 04:30 UTC the next day; the site's calendar says March 2nd.
    evening = datetime(2026, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    window = window_at(evening)
    assert window.anchor == datetime(2026, 3, 3, 4, 30, tzinfo=UTC)
    assert window.anchor.tzinfo is UTC
    assert window.anchor_day == date(2026, 3, 2)
    assert window.study_day(date(2026, 3, 29)) == 28
    assert place_onset(window, "2026-03-29").inside
    assert not place_onset(window, "2026-03-30").inside
    # 07:00 in Sydney is 20:00 UTC the day before; the site's date still rules.
    morning = datetime(2026, 3, 2, 7, 0, tzinfo=timezone(timedelta(hours=11)))
    assert window_at(morning).anchor_day == date(2026, 3, 2)
    assert window_at(morning).anchor == datetime(2026, 3, 1, 20, 0, tzinfo=UTC)


def test_a_dose_without_its_site_date_falls_back_to_the_utc_date() -> None:
    window = infusion_window(first_infusion=datetime(2026, 3, 3, 4, 30, tzinfo=UTC), site_day=None, days=28)
    assert window.anchor_day == date(2026, 3, 3)


def test_window_closes_when_the_last_dlt_day_ends_at_the_site() -> None:
    paris = timezone(timedelta(hours=1))
    window = window_at(datetime(2026, 3, 2, 10, 0, tzinfo=paris))
    assert window.state(datetime(2026, 3, 29, 23, 59, 59, tzinfo=paris)) == "open"
    assert window.state(datetime(2026, 3, 30, 0, 0, tzinfo=paris)) == "closed"
    assert window.end == datetime(2026, 3, 29, 23, 0, tzinfo=UTC)
    # the same instant written in another zone
    assert window.closed(datetime(2026, 3, 30, 2, 0, tzinfo=timezone(timedelta(hours=2))))


def test_day_0_convention_puts_the_28th_day_after_the_infusion_inside_as_the_week_4_visit() -> None:
    """Point 8: the window and the visit schedule count days the same way."""
    infusion = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    day0 = infusion_window(first_infusion=infusion, site_day=date(2026, 3, 2), days=28, count="anchor_is_day_0")
    onset = place_onset(day0, "2026-03-30")  # the 28th day after the infusion
    assert onset.inside and "study day 28" in onset.explanation
    assert not place_onset(day0, "2026-03-31").inside
    assert day0.end == datetime(2026, 3, 31, tzinfo=UTC)
    [week4] = schedule([Assessment(name="week 4", day=28, window_days=3)], calendar=day0.calendar)
    assert week4.due_from == datetime(2026, 3, 27, tzinfo=UTC) and week4.contains(datetime(2026, 3, 30, 12, tzinfo=UTC))
    day1 = infusion_window(first_infusion=infusion, site_day=date(2026, 3, 2), days=28, count="anchor_is_day_1")
    assert not place_onset(day1, "2026-03-30").inside
    [week4_day1] = schedule([Assessment(name="week 4", day=28, window_days=3)], calendar=day1.calendar)
    assert week4_day1.due_from == datetime(2026, 3, 26, tzinfo=UTC)  # day 28 is 2026-03-29 under day 1


def infusions_of(*days: int, start: datetime = datetime(2026, 3, 2, 10, tzinfo=UTC)) -> list[Infusion]:
    return [Infusion(start + timedelta(days=d), (start + timedelta(days=d)).date(), timedelta(0)) for d in days]


def arm_c(anchor: str, *given: int) -> DltWindow:
    window = subject_window(
        anchor=anchor,  # type: ignore[arg-type]
        days=28,
        count="anchor_is_day_0",
        infusions=infusions_of(*given),
        planned_infusions=4,
        interval_days=7,
        enrolled_on=None,
    )
    assert window is not None
    return window


def test_arm_c_a_reaction_on_day_30_is_outside_the_first_infusion_window_only() -> None:
    """Point 7: arm C's fourth infusion is on day 21; a reaction on day 30 is inside from the last infusion."""
    day30 = (date(2026, 3, 2) + timedelta(days=30)).isoformat()
    assert not place_onset(arm_c("first_infusion", 0, 7, 14, 21), day30).inside
    last = arm_c("last_planned_infusion", 0, 7, 14, 21)
    assert place_onset(last, day30).inside and last.last_day == date(2026, 3, 2) + timedelta(days=49)
    per = arm_c("per_infusion", 0, 7, 14, 21)
    assert place_onset(per, day30).inside and per.spans == ((date(2026, 3, 2), date(2026, 4, 20)),)


def test_last_planned_infusion_reaches_the_planned_day_even_before_it_is_given_and_follows_a_late_one() -> None:
    assert arm_c("last_planned_infusion", 0).last_day == date(2026, 3, 2) + timedelta(days=49)
    late = arm_c("last_planned_infusion", 0, 7, 14, 25)
    assert late.last_day == date(2026, 3, 2) + timedelta(days=53)
    assert arm_c("per_infusion", 0).last_day == date(2026, 3, 2) + timedelta(days=28)


def test_per_infusion_windows_with_a_gap_leave_the_gap_outside() -> None:
    window = subject_window(
        anchor="per_infusion",
        days=7,
        count="anchor_is_day_1",
        infusions=infusions_of(0, 21),
        planned_infusions=2,
        interval_days=21,
        enrolled_on=None,
    )
    assert window is not None and len(window.spans) == 2
    assert not place_onset(window, (date(2026, 3, 2) + timedelta(days=10)).isoformat()).inside
    assert place_onset(window, (date(2026, 3, 2) + timedelta(days=22)).isoformat()).inside


def test_enrolment_anchor_starts_when_the_enrolment_date_starts_anywhere() -> None:
    window = enrolment_window(enrolled_on=date(2026, 5, 10), days=21)
    assert window.start == datetime(2026, 5, 9, 10, tzinfo=UTC)  # 00:00 at UTC+14
    # closes when day 21 (2026-05-30) has ended in the latest time zone, UTC-12: 2026-05-31 12:00 UTC
    assert window.end == datetime(2026, 5, 31, 12, tzinfo=UTC)
    assert place_onset(window, "2026-05-30").inside  # day 21
    assert not place_onset(window, "2026-05-31").inside  # day 22


def test_partial_onsets_count_when_they_could_be_inside() -> None:
    window = window_at(datetime(2026, 3, 20, 9, 0, tzinfo=UTC))  # days 1-28: 2026-03-20 .. 2026-04-16
    march = place_onset(window, "2026-03")
    assert march.inside and not march.certain and "conservative" in march.explanation
    assert place_onset(window, "2026-04").inside
    assert not place_onset(window, "2026-05").inside
    assert not place_onset(window, "2026-02").inside
    assert place_onset(window, "2026").inside
    assert not place_onset(window, "2025").inside
    missing = place_onset(window, None)
    assert missing.inside and not missing.certain


def test_a_partial_onset_wholly_inside_is_certain() -> None:
    window = window_at(datetime(2026, 2, 1, 9, 0, tzinfo=UTC))  # 2026-02-01 .. 2026-02-28
    february = place_onset(window, "2026-02")
    assert february.inside and february.certain


@pytest.mark.parametrize(
    ("value", "first", "last"),
    [
        ("2024", date(2024, 1, 1), date(2024, 12, 31)),
        ("2024-02", date(2024, 2, 1), date(2024, 2, 29)),
        ("2026-02", date(2026, 2, 1), date(2026, 2, 28)),
        ("2026-02-03", date(2026, 2, 3), date(2026, 2, 3)),
    ],
)
def test_partial_date_range(value: str, first: date, last: date) -> None:
    assert partial_date_range(value) == (first, last)


@given(anchor=instants, days=window_days)
def test_window_ends_at_the_site_midnight_after_its_last_day(anchor: datetime, days: int) -> None:
    window = window_at(anchor, days)
    tz = anchor.tzinfo
    assert window.end == datetime.combine(window.last_day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    assert window.start == anchor
    assert window.start.utcoffset() == timedelta(0)
    assert window.study_day(window.anchor_day) == 1
    assert window.study_day(window.last_day) == days


@given(anchor=instants, days=window_days, offset=st.integers(min_value=-400, max_value=400))
def test_onset_date_is_inside_exactly_on_days_1_to_window_days(anchor: datetime, days: int, offset: int) -> None:
    window = window_at(anchor, days)
    onset = window.anchor_day + timedelta(days=offset)
    placement = place_onset(window, onset.isoformat())
    assert placement.inside == (0 <= offset < days)
    assert placement.certain


@given(anchor=instants, days=window_days)
def test_every_inside_day_has_ended_when_the_window_closes(anchor: datetime, days: int) -> None:
    window = window_at(anchor, days)
    tz = anchor.tzinfo
    end_of_last_day = datetime.combine(window.last_day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    assert window.end >= end_of_last_day
    assert not window.closed(window.end - timedelta(microseconds=1))
    assert window.closed(window.end)


@given(anchor=instants, days=window_days, year=st.integers(2019, 2036), month=st.integers(1, 12))
def test_partial_month_is_inside_iff_some_day_of_it_is(anchor: datetime, days: int, year: int, month: int) -> None:
    window = window_at(anchor, days)
    first, last = partial_date_range(f"{year:04d}-{month:02d}")
    any_day_inside = any(
        place_onset(window, (first + timedelta(days=i)).isoformat()).inside for i in range((last - first).days + 1)
    )
    assert place_onset(window, f"{year:04d}-{month:02d}").inside == any_day_inside


@given(moment=instants)
def test_the_window_end_follows_the_sites_calendar(moment: datetime) -> None:
    """The same instant at a site three hours east may be another date: the site's own days rule."""
    shifted = moment.astimezone(timezone(timedelta(hours=3)))
    assert window_at(shifted).end.astimezone(shifted.tzinfo).time() == datetime.min.time()


@given(enrolled=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)), days=window_days, tz=offsets)
def test_an_enrolment_window_stays_open_until_its_last_day_has_ended_at_any_site(
    enrolled: date, days: int, tz: timezone
) -> None:
    window = enrolment_window(enrolled_on=enrolled, days=days)
    last_moment = datetime.combine(window.last_day, datetime.max.time(), tzinfo=tz)
    assert not window.closed(last_moment), "closed while it is still the last study day at the site"
    day_after = datetime.combine(window.last_day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    assert window.closed(day_after + timedelta(hours=26)), "at most 26 h late (at UTC+14)"
