"""Pure: the protocol's visit schedule for one subject, and which visits were missed by `now`.

A visit on study `day` with +/- `window_days` spans whole site days, from study day day - window_days to
day + window_days inclusive, numbered and bounded by the same `StudyCalendar` as the DLT window (see
dlt_window: the protocol's `study_days` says whether the anchor is day 0 or day 1; days start and end at the
site's offset, or conservatively everywhere when it is unknown).

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
from datetime import datetime

from services.safety.dlt_window import StudyCalendar
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


def schedule(assessments: Sequence[Assessment], *, calendar: StudyCalendar) -> list[Visit]:
    return [
        Visit(
            name=a.name,
            due_from=calendar.day_starts(calendar.date_of(a.day - a.window_days)),
            due_until=calendar.day_ends(calendar.date_of(a.day + a.window_days)),
            kinds=tuple(a.kinds),
        )
        for a in assessments
    ]


def assessments_done(
    visits: Sequence[Visit], names: Collection[str], *, lab_times: Collection[datetime], ae_times: Collection[datetime]
) -> list[str]:
    """Which of the named visits have no data yet (empty: all have their data)."""
    return [v.name for v in visits if v.name in names and missing_kinds(v, lab_times=lab_times, ae_times=ae_times)]


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
