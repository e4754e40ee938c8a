"""Pure: the protocol's sample schedules (immunology at baseline and weeks 1, 4, 8) as visits, and which were missed.

Sample visits use the same study calendar and whole-site-day windows as the assessment schedule (see
assessments). A visit marked `before_first_infusion` (baseline) runs from `window_days` before its day until the
first infusion: a sample drawn after the product went in is not a baseline. A visit is missed once its window
has ended with no sample of the schedule's kind collected in it; the sweep flags it once, as
`<kind> sample: <visit>` in the missed-assessment record. A sample belongs to a schedule when the schedule's kind
is a word of the sample's (SDTM BECAT "IMMUNOLOGY", FHIR Specimen.type "Immunology whole blood" are `immunology`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from services.safety.assessments import MissedVisit, Visit
from services.safety.dlt_window import StudyCalendar
from shared.protocol import SampleSchedule

SAMPLE = "sample"


def sample_visit_name(kind: str, visit: str) -> str:
    return f"{kind} sample: {visit}"[:80]


def sample_visits(schedule: SampleSchedule, *, calendar: StudyCalendar, first_infusion: datetime) -> list[Visit]:
    visits = []
    for v in schedule.visits:
        start = calendar.day_starts(calendar.date_of(v.day - v.window_days))
        end = first_infusion if v.before_first_infusion else calendar.day_ends(calendar.date_of(v.day + v.window_days))
        visits.append(Visit(name=sample_visit_name(schedule.kind, v.name), due_from=start, due_until=end, kinds=()))
    return visits


def missed_samples(
    visits: Sequence[Visit],
    *,
    now: datetime,
    collected: Collection[datetime],
    flagged: Collection[str],
    left_study_at: datetime | None = None,
) -> list[MissedVisit]:
    """Sample visits whose window ended by `now` with no sample collected in it, not flagged before; a subject
    who left the study (withdrawn, died, completed: `left_study_at`) is not asked for samples due after that."""
    cutoff = now if left_study_at is None else min(now, left_study_at)
    return [
        MissedVisit(visit, [SAMPLE])
        for visit in visits
        if visit.name not in flagged and cutoff >= visit.due_until and not any(visit.contains(t) for t in collected)
    ]
