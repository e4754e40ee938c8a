"""Pure: one subject's place in the 3+3 count, from their own facts and `now`.

A subject counts as DLT-evaluable only if they had a (confirmed) DLT, or - without one - received every
infusion their arm plans (`cohort.evaluable_requires_all_infusions`), reached the end of their DLT window,
and have data for every assessment the protocol names (the arm's `evaluable_requires_assessments`, else the
cohort's). Otherwise:
- `under_review`: a suspected DLT is open; the subject is neither DLT-free nor a DLT until the officer decides;
- `pending`: still on study and able to become evaluable (the window or a required visit still runs);
- `not_evaluable`: can no longer become evaluable on the data we have (off study - withdrawn, lost to
  follow-up, died, completed - or past the window with infusions or required visits missing): not DLT-free,
  the cohort needs a replacement. Data arriving later (a late infusion record, a late visit) revise it.
- `excluded`: not in any cohort (no arm; off study before any infusion: screened, never dosed; or the enrolment
  was taken back and the subject had no infusion and
  no DLT). An enrolment deleted at the site never removes a subject who was infused or had a DLT: withdrawal
  and deletion are not the same thing, and a DLT always counts.

`changes_at` is the next instant the outcome would change by time alone (the window's end, the last
required visit's end), so the sweep reassesses exactly the subjects whose time has come.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.safety.dlt_window import DltWindow
from shared.clock import utc
from shared.events import SubjectStudyStatus
from shared.protocol import CohortRules

OutcomeName = Literal["pending", "evaluable", "dlt", "under_review", "not_evaluable", "excluded"]


@dataclass(frozen=True)
class SubjectFacts:
    subject_id: str
    arm: str | None
    enrolment_active: bool
    study_status: SubjectStudyStatus
    infusions_planned: int
    infusions_given: int
    window: DltWindow | None
    missing_assessments: tuple[str, ...]
    """Required visits without their data so far."""
    assessments_due_by: datetime | None
    """When the last required visit's window ends (None: no required visit, or no calendar yet)."""
    dlt_confirmed: int
    dlt_suspected: int


@dataclass(frozen=True)
class SubjectOutcome:
    subject_id: str
    arm: str | None
    outcome: OutcomeName
    dlt_confirmed: int = 0
    """DLT events (records) confirmed; the subject counts once whatever the number."""
    dlt_suspected: int = 0
    reason: str = ""
    evaluable_at: datetime | None = None
    changes_at: datetime | None = None

    @property
    def evaluable(self) -> bool:
        return self.outcome in ("evaluable", "dlt")

    @property
    def counted(self) -> bool:
        """In the cohort's size: every subject but the excluded and those to be replaced."""
        return self.outcome not in ("excluded", "not_evaluable")


def assess_subject(facts: SubjectFacts, *, rules: CohortRules, now: datetime) -> SubjectOutcome:
    def out(outcome: OutcomeName, reason: str, **extra: datetime | None) -> SubjectOutcome:
        return SubjectOutcome(
            facts.subject_id, facts.arm, outcome, facts.dlt_confirmed, facts.dlt_suspected, reason, **extra
        )

    now = utc(now)
    status = facts.study_status.replace("_", " ")
    deleted = "" if facts.enrolment_active else "; the site deleted the enrolment, but the subject still counts"
    if facts.arm is None:
        return out("excluded", "no enrolment into an arm on record")
    if not facts.enrolment_active and not facts.dlt_confirmed and not facts.dlt_suspected and not facts.infusions_given:
        return out("excluded", "enrolment taken back by the site, with no infusion and no DLT on record")
    if (
        not facts.infusions_given
        and not facts.dlt_confirmed
        and not facts.dlt_suspected
        and facts.study_status != "on_study"
    ):
        # Screened (or enrolled) but never dosed, and off study: never exposed, so not in the 3+3 count at all; a
        # subject still awaiting the first infusion keeps the place in the cohort (pending).
        return out("excluded", f"{status} before any infusion: never dosed, not in the 3+3 count")
    if facts.dlt_confirmed:
        return out("dlt", f"{facts.dlt_confirmed} confirmed DLT(s): evaluable, whatever follows ({status}){deleted}")
    if facts.dlt_suspected:
        return out("under_review", f"{facts.dlt_suspected} suspected DLT(s) awaiting review ({status}){deleted}")
    gaps = []
    if rules.evaluable_requires_all_infusions and facts.infusions_given < facts.infusions_planned:
        gaps.append(f"received {facts.infusions_given} of {facts.infusions_planned} planned infusion(s)")
    window = facts.window
    if window is None:
        gaps.append("no DLT window (no infusion on record)")
    elif not window.closed(now):
        gaps.append(f"DLT window open until {window.end.isoformat()}")
    if facts.missing_assessments:
        gaps.append(f"no data for required assessment(s) {', '.join(facts.missing_assessments)}")
    if not gaps:
        assert window is not None
        return out(
            "evaluable",
            f"DLT-free: all infusions, window closed {window.end.isoformat()}{deleted}",
            evaluable_at=window.end,
        )
    why = "; ".join(gaps)
    if facts.study_status != "on_study":
        return out("not_evaluable", f"{status} without a DLT and not evaluable ({why}): needs a replacement{deleted}")
    if window is None:
        return out("pending", f"not yet evaluable ({why})")
    if not window.closed(now):
        return out("pending", f"not yet evaluable ({why}){deleted}", changes_at=window.end)
    due = facts.assessments_due_by
    infusions_missing = rules.evaluable_requires_all_infusions and facts.infusions_given < facts.infusions_planned
    if not infusions_missing and facts.missing_assessments and due is not None and due > now:
        return out("pending", f"not yet evaluable ({why}){deleted}", changes_at=due)
    return out("not_evaluable", f"window closed and not evaluable ({why}): needs a replacement{deleted}")
