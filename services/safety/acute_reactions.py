"""Pure: is an AE an acute reaction to an infusion, and is it news?

An AE is an acute reaction when its onset falls within `window_hours` after the start of an infusion:
- onset date and time known: infusion start <= onset <= start + window (exactly 24 h counts: "within 24 h");
- onset date only: the infusion's own site date up to the date the window ends on, when the protocol says such
  onsets count (they may be within the window; the alert says the time is unknown). Partial dates (month or
  year only) never match: they are a data-quality question, not an acute reaction.
When several infusions match, the latest one before the onset is the one reacted to.
Alerted at grade >= `min_grade`, again only when the grade gets worse; grade >= `dlt_grade` is marked as one
the DLT criteria also judge (the DLT rules decide that separately).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from shared.protocol import AcuteReactions


@dataclass(frozen=True)
class Infusion:
    dose_id: str
    number: int
    started_at: datetime
    site_date: date
    """The infusion's calendar date at the site (the sender's UTC offset)."""


@dataclass(frozen=True)
class AcuteMatch:
    infusion: Infusion
    precision: Literal["time", "date"]
    hours_after: Decimal | None
    reason: str


@dataclass(frozen=True)
class AcuteDecision:
    match: AcuteMatch | None
    signal: bool
    dlt_grade: bool


def match_infusion(
    *, onset_at: datetime | None, onset: str | None, infusions: Sequence[Infusion], rules: AcuteReactions
) -> AcuteMatch | None:
    window = timedelta(hours=rules.window_hours)
    ordered = sorted(infusions, key=lambda i: i.started_at, reverse=True)
    if onset_at is not None:
        for infusion in ordered:
            after = onset_at - infusion.started_at
            if timedelta(0) <= after <= window:
                hours = (Decimal(after.total_seconds()) / 3600).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
                reason = (
                    f"onset {hours} h after the start of infusion {infusion.number} (window {rules.window_hours} h)"
                )
                return AcuteMatch(infusion, "time", hours, reason)
        return None
    onset_day = _full_date(onset)
    if onset_day is None or rules.date_only_onset == "ignored":
        return None
    for infusion in ordered:
        last_day = infusion.site_date + timedelta(days=-(-rules.window_hours // 24))  # the window's last date
        if infusion.site_date <= onset_day <= last_day:
            reason = (
                f"onset on {onset_day} (no time recorded), within the {rules.window_hours} h after infusion "
                f"{infusion.number} on {infusion.site_date} by date: counted as acute (the cautious reading)"
            )
            return AcuteMatch(infusion, "date", None, reason)
    return None


def _full_date(onset: str | None) -> date | None:
    if onset is None or len(onset) != 10:
        return None
    return date.fromisoformat(onset)


def decide(
    *,
    grade: int | None,
    onset_at: datetime | None,
    onset: str | None,
    infusions: Sequence[Infusion],
    rules: AcuteReactions,
    signalled_grade: int | None,
) -> AcuteDecision:
    """Signal an acute reaction at or above the alert grade, once per grade it reaches."""
    match = match_infusion(onset_at=onset_at, onset=onset, infusions=infusions, rules=rules)
    if match is None or grade is None or grade < rules.min_grade:
        return AcuteDecision(match, signal=False, dlt_grade=False)
    worse = signalled_grade is None or grade > signalled_grade
    return AcuteDecision(match, signal=worse, dlt_grade=grade >= rules.dlt_grade)
