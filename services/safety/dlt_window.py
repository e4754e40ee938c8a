"""Pure: the study calendar, where a subject's DLT observation window lies, and where an AE onset falls.

One day count for the DLT window *and* the visit schedule (`StudyCalendar`, the protocol's `study_days`):
- The calendar's anchor is the first infusion (or the enrolment date with the `enrolment` anchor). Its date is
  the date *the site recorded* (the infusion time's own UTC offset: a 23:30-05:00 infusion is on the site's
  date, not the next UTC day). That date is study day 0 (`anchor_is_day_0`) or day 1 (`anchor_is_day_1`, the
  CDISC convention with no day 0); the day before it is day -1 or day 0.
- A "28-day window" covers study days 0..28 with day 0 (the 28th day after the infusion is inside, as the
  week-4 visit on day 28 is), days 1..28 with day 1. So the last DLT date is anchor + 28 or anchor + 27.
- Days are the site's calendar days: a day starts and ends at the site's UTC offset (the anchor infusion's).
  The window ends at the first instant after its last DLT day at the site; a visit window likewise. Where the
  site's offset is unknown (an enrolment date has no time, old rows), a day is taken to end when it has ended
  everywhere (00:00 at UTC-12) and to start when it started anywhere (00:00 at UTC+14): conservative, a
  subject is never evaluable while it is still the last DLT day somewhere.

Anchors (the protocol's `dlt.anchor`):
- `first_infusion`: one span from the first infusion's date to its last DLT day.
- `last_planned_infusion`: from the first infusion to the last DLT day counted from the arm's last infusion,
  at its planned date (first + (infusions - 1) x interval) or the date it was actually given if later.
- `per_infusion`: the union of one window per infusion given (overlapping weekly windows make one span).
- `enrolment`: one span from the enrolment date.

AE onsets are dates, so they are placed by date: inside when the date is in a span (an onset on the infusion
day counts even if it was before the infusion hour, which a date cannot tell). A partial onset (YYYY or
YYYY-MM) covers a range of dates; it is inside when any date of the range could be (conservative), and the
reason says so. A missing onset is treated the same way.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from shared.clock import utc
from shared.events import PARTIAL_DATE
from shared.protocol import DltAnchor, StudyDayCount

WindowState = Literal["open", "closed"]
EARLIEST_ZONE = timezone(timedelta(hours=14))
"""The first time zone to start a calendar day (UTC+14)."""
LATEST_ZONE = timezone(timedelta(hours=-12))
"""The last time zone to end a calendar day (UTC-12)."""


def start_of_day_everywhere(day: date) -> datetime:
    """The first instant that is `day` somewhere on Earth (00:00 at UTC+14), in UTC."""
    return utc(datetime.combine(day, time(0, 0), tzinfo=EARLIEST_ZONE))


def end_of_day_everywhere(day: date) -> datetime:
    """The first instant after `day` has ended everywhere on Earth (the next 00:00 at UTC-12), in UTC."""
    return utc(datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=LATEST_ZONE))


@dataclass(frozen=True)
class StudyCalendar:
    """Study days of one subject: numbering and the instants a site day starts and ends."""

    anchor_day: date
    day_of_anchor: int
    """0 or 1: the number of the anchor's date."""
    utc_offset: timedelta | None
    """The site's offset (from the anchor infusion); None when unknown."""

    def day_number(self, day: date) -> int:
        return (day - self.anchor_day).days + self.day_of_anchor

    def date_of(self, number: int) -> date:
        return self.anchor_day + timedelta(days=number - self.day_of_anchor)

    def day_starts(self, day: date) -> datetime:
        if self.utc_offset is None:
            return start_of_day_everywhere(day)
        return utc(datetime.combine(day, time(0, 0), tzinfo=timezone(self.utc_offset)))

    def day_ends(self, day: date) -> datetime:
        """The first instant after `day` at the site."""
        if self.utc_offset is None:
            return end_of_day_everywhere(day)
        return utc(datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=timezone(self.utc_offset)))


def day_of_anchor(count: StudyDayCount) -> int:
    return 0 if count == "anchor_is_day_0" else 1


@dataclass(frozen=True)
class Infusion:
    """An infusion given (still on record), as the window needs it."""

    administered_at: datetime
    site_day: date
    utc_offset: timedelta | None


@dataclass(frozen=True)
class DltWindow:
    calendar: StudyCalendar
    anchor: datetime
    """The instant the window opens (UTC): the first infusion, or the enrolment date's first instant."""
    spans: tuple[tuple[date, date], ...]
    """Inclusive date ranges inside the window, in order and not overlapping."""
    days: int
    basis: DltAnchor

    @property
    def anchor_day(self) -> date:
        return self.calendar.anchor_day

    @property
    def start(self) -> datetime:
        return self.anchor

    @property
    def last_day(self) -> date:
        """The last date inside the window (the last DLT day)."""
        return self.spans[-1][1]

    @functools.cached_property
    def end(self) -> datetime:
        """Exclusive: the first instant after the last DLT day at the site (cached: every result of a subject's
        history is tested against it at each reassessment)."""
        return self.calendar.day_ends(self.last_day)

    def study_day(self, day: date) -> int:
        return self.calendar.day_number(day)

    def contains_day(self, day: date) -> bool:
        return any(first <= day <= last for first, last in self.spans)

    def site_date(self, moment: datetime) -> date:
        """The site's date of an instant (UTC when the site's offset is unknown)."""
        return (utc(moment) + (self.calendar.utc_offset or timedelta(0))).date()

    def contains_instant(self, moment: datetime) -> bool:
        """After the window opened and on a date inside it (a lab drawn before the infusion is pre-dose)."""
        return utc(moment) >= self.anchor and utc(moment) < self.end and self.contains_day(self.site_date(moment))

    def closed(self, now: datetime) -> bool:
        return utc(now) >= self.end

    def state(self, now: datetime) -> WindowState:
        return "closed" if self.closed(now) else "open"

    def describe(self) -> str:
        ranges = ", ".join(
            f"study days {self.study_day(a)}-{self.study_day(b)} ({a.isoformat()} to {b.isoformat()})"
            for a, b in self.spans
        )
        return ranges


def last_dlt_offset(days: int, count: StudyDayCount) -> int:
    """Days from an anchor date to its last DLT date: day 0 counts `days` days after it, day 1 `days - 1`."""
    return days - day_of_anchor(count)


def _merge(spans: Sequence[tuple[date, date]]) -> tuple[tuple[date, date], ...]:
    merged: list[tuple[date, date]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def subject_window(
    *,
    anchor: DltAnchor,
    days: int,
    count: StudyDayCount,
    infusions: Sequence[Infusion],
    planned_infusions: int,
    interval_days: int | None,
    enrolled_on: date | None,
) -> DltWindow | None:
    """The window from the infusions still on record (or the enrolment date); None before its anchor exists."""
    reach = last_dlt_offset(days, count)
    first_number = day_of_anchor(count)
    if anchor == "enrolment":
        if enrolled_on is None:
            return None
        cal = StudyCalendar(enrolled_on, first_number, None)
        opens = start_of_day_everywhere(enrolled_on)
        return DltWindow(cal, opens, ((enrolled_on, enrolled_on + timedelta(days=reach)),), days, anchor)
    if not infusions:
        return None
    given = sorted(infusions, key=lambda i: i.administered_at)
    first = given[0]
    cal = StudyCalendar(first.site_day, first_number, first.utc_offset)
    spans: tuple[tuple[date, date], ...]
    if anchor == "first_infusion":
        spans = ((first.site_day, first.site_day + timedelta(days=reach)),)
    elif anchor == "last_planned_infusion":
        planned_last = first.site_day + timedelta(days=(planned_infusions - 1) * (interval_days or 0))
        latest = max(i.site_day for i in given)
        spans = ((first.site_day, max(planned_last, latest) + timedelta(days=reach)),)
    else:
        spans = _merge([(i.site_day, i.site_day + timedelta(days=reach)) for i in given])
    return DltWindow(cal, utc(first.administered_at), spans, days, anchor)


def infusion_window(
    *, first_infusion: datetime, site_day: date | None, days: int, count: StudyDayCount = "anchor_is_day_1"
) -> DltWindow:
    """A window anchored at one infusion; `site_day` is its local date (None: fall back to the UTC date)."""
    if site_day is None:
        infusion = Infusion(first_infusion, utc(first_infusion).date(), timedelta(0))
    else:
        offset = first_infusion.utcoffset() if site_day == first_infusion.date() else None
        infusion = Infusion(first_infusion, site_day, offset)
    window = subject_window(
        anchor="first_infusion",
        days=days,
        count=count,
        infusions=[infusion],
        planned_infusions=1,
        interval_days=None,
        enrolled_on=None,
    )
    assert window is not None  # one infusion given
    return window


def enrolment_window(*, enrolled_on: date, days: int, count: StudyDayCount = "anchor_is_day_1") -> DltWindow:
    window = subject_window(
        anchor="enrolment",
        days=days,
        count=count,
        infusions=[],
        planned_infusions=1,
        interval_days=None,
        enrolled_on=enrolled_on,
    )
    assert window is not None
    return window


def site_date(moment: datetime) -> date:
    """The calendar date in the offset the sender gave (before the database normalises it to UTC)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: Sentinel only handles timezone-aware times")
    return moment.date()


def site_offset_minutes(moment: datetime) -> int:
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("naive datetime: Sentinel only handles timezone-aware times")
    return int(offset.total_seconds() // 60)


def partial_date_range(value: str) -> tuple[date, date]:
    """The first and last date a partial date (YYYY, YYYY-MM or YYYY-MM-DD) can mean."""
    match = PARTIAL_DATE.fullmatch(value)
    if not match:
        raise ValueError(f"not a (partial) date: {value!r}")
    year, month, day = (int(part) if part else None for part in match.groups())
    assert year is not None  # the pattern requires it
    if month is None:
        return date(year, 1, 1), date(year, 12, 31)
    if day is None:
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    exact = date(year, month, day)
    return exact, exact


@dataclass(frozen=True)
class OnsetPlacement:
    inside: bool
    certain: bool
    """False when the onset is partial or missing and only *could* be inside (or outside)."""
    explanation: str


def place_onset(window: DltWindow, onset: str | None) -> OnsetPlacement:
    """Where an AE onset falls: inside when any date it can mean lies in the window."""
    span = window.describe()
    if onset is None:
        return OnsetPlacement(True, False, f"onset not reported: it could be inside the DLT window, {span}")
    first, last = partial_date_range(onset)
    first_day, last_day = window.study_day(first), window.study_day(last)
    overlapping = [(max(a, first), min(b, last)) for a, b in window.spans if a <= last and first <= b]
    inside = bool(overlapping)
    if first == last:
        where = "inside" if inside else "outside"
        return OnsetPlacement(inside, True, f"onset {onset} is study day {first_day}, {where} {span}")
    if not inside:
        return OnsetPlacement(
            False, True, f"partial onset {onset} (study days {first_day}-{last_day}) is outside {span}"
        )
    whole = sum((b - a).days + 1 for a, b in overlapping) == (last - first).days + 1
    if whole:
        return OnsetPlacement(True, True, f"partial onset {onset} (study days {first_day}-{last_day}) is inside {span}")
    return OnsetPlacement(
        True,
        False,
        f"partial onset {onset} (study days {first_day}-{last_day}) could be inside {span}: counted as inside"
        " (conservative) until the site gives the full date",
    )
