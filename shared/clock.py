"""Time as an injected dependency: domain code takes `now`, services take a Clock.

Every regulatory deadline in Sentinel is computed from a Clock so that tests can move time
deterministically instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to; always UTC-aware."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("FakeClock needs timezone-aware times")
        self._now = moment.astimezone(UTC)


def utc(moment: datetime) -> datetime:
    """Normalise an aware datetime to UTC; a naive one is a programming error, not a guess."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: Sentinel only handles timezone-aware times")
    return moment.astimezone(UTC)


def utc_or_invalid(moment: datetime) -> datetime:
    """For request fields: an aware time that has no UTC equivalent (year 1 at +01:00) is a client error."""
    try:
        return utc(moment)
    except OverflowError as exc:
        raise ValueError("this time is outside the range Sentinel can represent in UTC") from exc
