"""Pure: where a subject's DLT observation window lies, and where an AE onset falls against it.

Conventions (one place, so the DLT rule, the timeline and the cohort engine agree):
- The window opens at the protocol's anchor: the first infusion (its exact instant), or the enrolment date
  (midnight UTC, as the enrolment record has no time). Anchored at the first infusion, it is
  [anchor, anchor + window_days) as instants, computed in UTC with exact timedeltas: the window is *closed*
  (the subject evaluable without a DLT) once `now >= anchor + window_days`.
- Anchored at enrolment, the record has a date but neither a time nor the site's time zone, so the window
  closes when study day `window_days` has ended everywhere: midnight after the last day in the latest time
  zone (UTC-12), i.e. 12 h after UTC midnight. Conservative: a subject is never counted evaluable while it
  is still the last study day at their site, at the price of a later close elsewhere (up to 26 h at UTC+14).
- Study days count calendar dates: day 1 is the anchor's date *as the site recorded it* (the infusion
  time's own UTC offset, so a 23:30-05:00 infusion is day 1 on the site's date, not the next UTC day).
- AE onsets are dates, so they are placed by study day: an onset on study day 1..window_days is inside
  (day 28 of a 28-day window in, day 29 out; an onset on the infusion day counts even if it was before the
  infusion hour, which a date cannot tell). Since the anchor lies within day 1, the window's end instant is
  always after day `window_days` has ended, so no inside onset date can be reported after the window closed
  without being a late report of an inside AE.
- A partial onset (YYYY or YYYY-MM) covers a range of dates; it is treated as inside when any date of the
  range could be inside (conservative), and the reason says so. A missing onset is treated the same way.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Literal

from shared.clock import utc
from shared.events import PARTIAL_DATE

WindowState = Literal["open", "closed"]


@dataclass(frozen=True)
class DltWindow:
    anchor: datetime
    """The instant the window opens (UTC)."""
    anchor_day: date
    """Study day 1: the anchor's calendar date at the site."""
    days: int
    basis: Literal["first_infusion", "enrolment"]

    @property
    def start(self) -> datetime:
        return self.anchor

    @property
    def end(self) -> datetime:
        """Exclusive: the first instant after the window (see the module docstring for the enrolment anchor)."""
        if self.basis == "enrolment":
            return end_of_day_everywhere(self.last_day)
        return self.anchor + timedelta(days=self.days)

    @property
    def last_day(self) -> date:
        """The last calendar date inside the window (study day `days`)."""
        return self.anchor_day + timedelta(days=self.days - 1)

    def study_day(self, day: date) -> int:
        """Day 1 is the anchor day; the day before it is day 0 (no 'day -0' gap, unlike some CRFs)."""
        return (day - self.anchor_day).days + 1

    def closed(self, now: datetime) -> bool:
        return utc(now) >= self.end

    def state(self, now: datetime) -> WindowState:
        return "closed" if self.closed(now) else "open"


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


def infusion_window(*, first_infusion: datetime, site_day: date | None, days: int) -> DltWindow:
    """Window anchored at the first infusion; `site_day` is its local date (None: fall back to the UTC date)."""
    anchor = utc(first_infusion)
    return DltWindow(anchor=anchor, anchor_day=site_day or anchor.date(), days=days, basis="first_infusion")


def enrolment_window(*, enrolled_on: date, days: int) -> DltWindow:
    anchor = datetime.combine(enrolled_on, time(0, 0), tzinfo=UTC)
    return DltWindow(anchor=anchor, anchor_day=enrolled_on, days=days, basis="enrolment")


def site_date(moment: datetime) -> date:
    """The calendar date in the offset the sender gave (before the database normalises it to UTC)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: Sentinel only handles timezone-aware times")
    return moment.date()


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
    """Where an AE onset falls: inside when any date it can mean is on study day 1..window_days."""
    span = f"study days 1-{window.days} ({window.anchor_day.isoformat()} to {window.last_day.isoformat()})"
    if onset is None:
        return OnsetPlacement(True, False, f"onset not reported: it could be inside the DLT window, {span}")
    first, last = partial_date_range(onset)
    first_day, last_day = window.study_day(first), window.study_day(last)
    inside = first_day <= window.days and last_day >= 1
    if first == last:
        where = "inside" if inside else "outside"
        return OnsetPlacement(inside, True, f"onset {onset} is study day {first_day}, {where} {span}")
    if not inside:
        return OnsetPlacement(
            False, True, f"partial onset {onset} (study days {first_day}-{last_day}) is outside {span}"
        )
    whole = first_day >= 1 and last_day <= window.days
    if whole:
        return OnsetPlacement(True, True, f"partial onset {onset} (study days {first_day}-{last_day}) is inside {span}")
    return OnsetPlacement(
        True,
        False,
        f"partial onset {onset} (study days {first_day}-{last_day}) could be inside {span}: counted as inside"
        " (conservative) until the site gives the full date",
    )
