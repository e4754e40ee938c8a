"""Pure: the protocol's visit schedule for one subject, and which visits were missed by `now`.

A visit on study `day` with +/- `window_days` spans whole site days, from study day day - window_days to
day + window_days inclusive, numbered and bounded by the same `StudyCalendar` as the DLT window (see
dlt_window: the protocol's `study_days` says whether the anchor is day 0 or day 1; days start and end at the
site's offset, or conservatively everywhere when it is unknown).

What counts as data for a visit:
- `lab`: a lab result collected inside the visit window;
- `ae`: what the protocol's `ae_assessment.evidence` accepts: an AE review record ("AE review done", new AEs
  or none) naming the visit or assessed inside its window (`ae_review`), an AE report (any version) received
  inside the window (`ae_report`), a lab drawn in it (`lab`: the reading from before the review record
  existed, where a subject seen for labs counted as asked about AEs).
A visit is missed once its window has ended with any of its kinds missing; it is flagged once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.safety.dlt_window import StudyCalendar
from shared.protocol import AeEvidence, Assessment, AssessmentKind

LEGACY_EVIDENCE: tuple[AeEvidence, ...] = ("ae_review", "ae_report", "lab")


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
class ReviewMark:
    """An AE review record: when it was assessed, and the visit it names (if any)."""

    assessed_at: datetime
    visit: str | None = None

    def covers(self, visit: Visit) -> bool:
        if self.visit is not None:
            return self.visit.casefold() == visit.name.casefold()
        return visit.contains(self.assessed_at)


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
    visits: Sequence[Visit],
    names: Collection[str],
    *,
    lab_times: Collection[datetime],
    ae_times: Collection[datetime],
    reviews: Collection[ReviewMark] = (),
    evidence: Collection[AeEvidence] = LEGACY_EVIDENCE,
) -> list[str]:
    """Which of the named visits have no data yet (empty: all have their data)."""
    return [
        v.name
        for v in visits
        if v.name in names
        and missing_kinds(v, lab_times=lab_times, ae_times=ae_times, reviews=reviews, evidence=evidence)
    ]


def missing_kinds(
    visit: Visit,
    *,
    lab_times: Collection[datetime],
    ae_times: Collection[datetime],
    reviews: Collection[ReviewMark] = (),
    evidence: Collection[AeEvidence] = LEGACY_EVIDENCE,
) -> list[str]:
    lab_seen = any(visit.contains(t) for t in lab_times)
    ae_seen = (
        ("ae_review" in evidence and any(r.covers(visit) for r in reviews))
        or ("ae_report" in evidence and any(visit.contains(t) for t in ae_times))
        or ("lab" in evidence and lab_seen)
    )
    seen = {"lab": lab_seen, "ae": ae_seen}
    return [kind for kind in visit.kinds if not seen[kind]]


def missed_visits(
    visits: Sequence[Visit],
    *,
    now: datetime,
    lab_times: Collection[datetime],
    ae_times: Collection[datetime],
    flagged: Collection[str],
    reviews: Collection[ReviewMark] = (),
    evidence: Collection[AeEvidence] = LEGACY_EVIDENCE,
) -> list[MissedVisit]:
    """Visits whose window has ended by `now` without their data, not flagged before."""
    missed = []
    for visit in visits:
        if visit.name in flagged or now < visit.due_until:
            continue
        missing = missing_kinds(visit, lab_times=lab_times, ae_times=ae_times, reviews=reviews, evidence=evidence)
        if missing:
            missed.append(MissedVisit(visit, missing))
    return missed
