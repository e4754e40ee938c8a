"""Pure: the protocol's visit schedule for one subject, and which visits were missed by `now`.

A visit `day` days after the anchor with +/- `window_days` spans whole calendar days, from
anchor_day + day - window_days to anchor_day + day + window_days inclusive, bounded at UTC midnights
(labs carry UTC instants; the site's own midnight is not known for every record).

What counts as data for a visit:
- `lab`: a lab result collected inside the visit window;
- `ae`: an AE report (any version) received inside the visit window, *or* a lab drawn in it. The event
  contract has no "no new AEs" record, so the absence of an AE report is not evidence that the AE
  assessment was skipped; a subject seen for labs was seen.
A visit is missed once its window has ended with any of its kinds missing; it is flagged once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from shared.protocol import Assessment, AssessmentKind


@dataclass(frozen=True)
class Visit:
    name: str
    due_from: datetime
    due_until: datetime
    """Exclusive."""
    kinds: tuple[AssessmentKind, ...]

    def contains(self, moment: datetime) -> bool:
        return self.due_from <= moment < self.due_until


@dataclass(frozen=True)
class MissedVisit:
    visit: Visit
    missing: list[str]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def schedule(assessments: Sequence[Assessment], *, anchor_day: date) -> list[Visit]:
    return [
        Visit(
            name=a.name,
            due_from=_midnight(anchor_day + timedelta(days=a.day - a.window_days)),
            due_until=_midnight(anchor_day + timedelta(days=a.day + a.window_days + 1)),
            kinds=tuple(a.kinds),
        )
        for a in assessments
    ]


def missing_kinds(visit: Visit, *, lab_times: Collection[datetime], ae_times: Collection[datetime]) -> list[str]:
    lab_seen = any(visit.contains(t) for t in lab_times)
    ae_seen = lab_seen or any(visit.contains(t) for t in ae_times)
    seen = {"lab": lab_seen, "ae": ae_seen}
    return [kind for kind in visit.kinds if not seen[kind]]


def missed_visits(
    visits: Sequence[Visit],
    *,
    now: datetime,
    lab_times: Collection[datetime],
    ae_times: Collection[datetime],
    flagged: Collection[str],
) -> list[MissedVisit]:
    """Visits whose window has ended by `now` without their data, not flagged before."""
    missed = []
    for visit in visits:
        if visit.name in flagged or now < visit.due_until:
            continue
        missing = missing_kinds(visit, lab_times=lab_times, ae_times=ae_times)
        if missing:
            missed.append(MissedVisit(visit, missing))
    return missed
