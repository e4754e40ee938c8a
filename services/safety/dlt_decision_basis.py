"""Pure: the data a DLT decision relied on, and the finding for the officers when they change under it.

The rules never undo an officer's decision (`dlt.transition`: a confirmed DLT stays confirmed, a rejected one stays
rejected unless a worse grade or another criterion reopens it as a suspicion). But the committee decided on the AE
as it then was, so when the site's data move against the decision, the committee is told, once, what changed and
how to revise the decision:
- a CONFIRMED DLT whose AE no longer meets any DLT criterion (the investigator's follow-up says 'not related', a
  corrected onset falls outside the window, a recoded term is not listed, the labs behind it were corrected);
- a CONFIRMED DLT whose AE the site recoded to another event that meets only another criterion: the confirmation
  does not carry over to an event no one reviewed, so the rules reopen it as a suspicion (`dlt.transition`: the
  arm's 3+3 counts it as under review, not confirmed, with a review clock) and this finding says why;
- a CONFIRMED DLT whose AE the site recoded to another event that still meets the criterion confirmed: the
  confirmation stands (the 3+3 counts it), but the DLT listing and the minutes now name an event the committee never
  adjudicated (its attribution may differ), so the finding names the term change (again at each recode to yet
  another event: the committee's agenda names the one it was told of). Another event is another CTCAE
  term after the verbatim synonyms and the MedDRA code are mapped (`is_other_event`): a rewritten verbatim of the
  same term is the same event and tells nothing;
- a REJECTED DLT whose AE is now more clearly a DLT: it meets a criterion it did not meet when rejected, or the
  investigator's relatedness rose above the one the committee saw (a worse grade needs no finding: it reopens the
  DLT as a suspicion, with its own review clock);
- a REJECTED DLT whose AE the site recoded to another event that meets the same criterion (another criterion reopens
  it): the rejection stands (the 3+3 leaves it out), but it judged another event, whose attribution may differ (a
  pneumonitis put down to CMV says nothing of a colitis), and leaving out a DLT is the unsafe side: the committee is
  told, as for a confirmation.
How the data stand against the decision (`Divergence`) is stored on the record and is a function of the decision and
the data as they stand, so the same data in any order end in the same state. A finding goes out when it appears,
and one more when the data return to what the decision relied on: the committee may have put the first on its
agenda. An AE the site takes back raises its own finding (`retracted_dlt`) and none here; a decision (or its
revision) takes a new snapshot and is itself mailed, so it raises nothing here either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from services.safety.dlt import DltState
from shared.protocol import RELATEDNESS_ORDER

DECIDED_DLT_DATA_CHANGED = "decided_dlt_data_changed"
"""The data a confirmed or rejected DLT was decided on changed against (or back to) the decision."""


class Divergence(StrEnum):
    NO_LONGER_MEETS = "no_longer_meets"
    """Confirmed on data that met a criterion; they meet none now."""
    OTHER_EVENT = "other_event"
    """Confirmed; the AE is now another event (term) meeting only another criterion: reopened as a suspicion."""
    RECODED = "recoded"
    """Confirmed or rejected; the AE is now another event (term) that meets the criterion decided on: it stands."""
    NOW_MEETS = "now_meets"
    """Rejected on data that met no criterion; they meet one now."""
    MORE_RELATED = "more_related"
    """Rejected; the investigator's relatedness is now higher than the committee saw, and a criterion is met."""


class DecidedDlt(Protocol):
    """The DLT record as the rule reads it (`models.DltRecord`), after this look's state transition."""

    @property
    def dlt_id(self) -> str: ...
    @property
    def subject_id(self) -> str: ...
    @property
    def ae_id(self) -> str: ...
    @property
    def arm(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def decided_by(self) -> str | None: ...
    @property
    def decided_at(self) -> datetime | None: ...
    @property
    def decision_reason(self) -> str | None: ...
    @property
    def decided_grade(self) -> int | None: ...
    @property
    def decided_criterion(self) -> str | None: ...
    @property
    def decided_relatedness(self) -> str | None: ...
    @property
    def decided_met(self) -> bool | None: ...
    @property
    def divergence(self) -> str | None: ...
    @property
    def decided_state(self) -> str | None: ...
    @property
    def decided_term(self) -> str | None: ...


@dataclass(frozen=True)
class DataLook:
    """The DLT's AE (or labs) as they stand, as the DLT rules judged them in this look."""

    term: str
    version: int
    grade: int | None
    relatedness: str | None
    meets: bool
    criterion: str | None
    reason: str
    active: bool = True
    """False: the site marked the AE entered in error or deleted."""


@dataclass(frozen=True)
class Finding:
    code: str
    detail: str


@dataclass(frozen=True)
class BasisCheck:
    divergence: Divergence | None
    """To store on the record: how the data stand against the decision now (None: as it relied on)."""
    finding: Finding | None
    """What to tell the officers, or None (nothing new since the last look)."""


def decision_on_file(dlt: DecidedDlt) -> str | None:
    """The officer's decision ('confirmed', 'rejected') whatever state the data moved the record to since; None:
    undecided. A record decided before the decision was kept: its state, or a rejection when reopened (until a
    confirmation could reopen, only a rejection did)."""
    if dlt.decided_at is None:
        return None
    if dlt.decided_state:
        return dlt.decided_state
    confirmed, rejected = DltState.CONFIRMED.value, DltState.REJECTED.value
    return dlt.state if dlt.state in (confirmed, rejected) else rejected


def is_other_event(dlt: DecidedDlt, term: str) -> bool:
    """The AE is now reported as another event (CTCAE term) than the one decided on. Lab-based records are one term
    by construction; a record decided before the term was kept is taken as the same event."""
    if dlt.ae_id.startswith("lab:") or not dlt.decided_term:
        return False
    return _folded(term) != _folded(dlt.decided_term)


def _folded(term: str) -> str:
    return term.strip().casefold()


def divergence(dlt: DecidedDlt, look: DataLook) -> Divergence | None:
    """How the data stand against the decision on file. A record decided before the decision's data were kept
    (`decided_met` None) is taken to have met a criterion: the usual case, and the one that tells rather than
    hides when a confirmed DLT's data no longer meet one."""
    decision = decision_on_file(dlt)
    if not look.active or decision is None:
        return None
    met = dlt.decided_met is not False
    if decision == DltState.CONFIRMED.value:
        if dlt.state == DltState.SUSPECTED.value:  # reopened by the rules: the AE is now another event
            return Divergence.OTHER_EVENT
        if met and not look.meets:
            return Divergence.NO_LONGER_MEETS
        return Divergence.RECODED if look.meets and is_other_event(dlt, look.term) else None
    if dlt.state == DltState.REJECTED.value and look.meets:
        if not met:
            return Divergence.NOW_MEETS
        if _rank(look.relatedness) > _rank(dlt.decided_relatedness):
            return Divergence.MORE_RELATED
        if is_other_event(dlt, look.term):
            return Divergence.RECODED
    return None


def check_basis(dlt: DecidedDlt, look: DataLook, *, previous_term: str | None = None) -> BasisCheck:
    """The divergence to store and the finding to raise: when it appears or changes, and when the data return to
    what the decision relied on (the AE active and the decision unchanged); nothing when it stays as it was, except
    a recode to yet another event (`previous_term`: the term of the look before): the listing names another event
    again, one the committee was not told of."""
    now = divergence(dlt, look)
    before = Divergence(dlt.divergence) if dlt.divergence else None
    if now is before:
        if now is Divergence.RECODED and previous_term is not None and _folded(previous_term) != _folded(look.term):
            return BasisCheck(now, Finding(DECIDED_DLT_DATA_CHANGED, _changed(dlt, look, now)))
        return BasisCheck(now, None)
    if now is not None:
        return BasisCheck(now, Finding(DECIDED_DLT_DATA_CHANGED, _changed(dlt, look, now)))
    decided = dlt.state in (DltState.CONFIRMED.value, DltState.REJECTED.value)
    if before is not None and look.active and decided:
        return BasisCheck(None, Finding(DECIDED_DLT_DATA_CHANGED, _restored(dlt, look, before)))
    return BasisCheck(None, None)


_RANK: dict[str, int] = {r: n for n, r in enumerate(RELATEDNESS_ORDER)}


def _rank(relatedness: str | None) -> int:
    """Not yet assessed ranks below any assessment: the site's word that it is related is news to a rejection."""
    return _RANK.get(relatedness or "", -1)


def _said(relatedness: str | None) -> str:
    return relatedness.replace("_", " ") if relatedness else "not yet assessed"


def _what(dlt: DecidedDlt, look: DataLook) -> str:
    grade = f"grade {look.grade}" if look.grade is not None else "no grade"
    if dlt.ae_id.startswith("lab:"):
        return f"Subject {dlt.subject_id}, the '{look.term}' lab results"
    return f"Subject {dlt.subject_id}, AE {dlt.ae_id} ({look.term}, {grade}; AE version {look.version})"


def _changes(dlt: DecidedDlt, look: DataLook) -> str:
    changes = []
    if is_other_event(dlt, look.term):
        changes.append(f"the term from '{dlt.decided_term}' to '{look.term}'")
    if look.relatedness != dlt.decided_relatedness and not dlt.ae_id.startswith("lab:"):
        changes.append(f"relatedness from {_said(dlt.decided_relatedness)} to {_said(look.relatedness)}")
    if look.grade is not None and dlt.decided_grade is not None and look.grade != dlt.decided_grade:
        changes.append(f"grade from {dlt.decided_grade} to {look.grade}")
    if not changes:
        return "the site's data changed since the decision"
    return "since the decision, the site's data changed " + " and ".join(changes)


def _decision(dlt: DecidedDlt) -> str:
    when = dlt.decided_at.strftime("%Y-%m-%d %H:%M UTC") if dlt.decided_at else "an unknown time"
    why = f" ('{dlt.decision_reason}')" if dlt.decision_reason else ""
    return (
        f"DLT {dlt.dlt_id} was {decision_on_file(dlt) or dlt.state} by {dlt.decided_by or 'an officer'} on {when}{why}"
    )


def _how_to_revise(dlt: DecidedDlt) -> str:
    other = "reject" if dlt.state == DltState.CONFIRMED.value else "confirm"
    return (
        "Check the change with the site and review the decision; to revise it, use 'Revise this decision' on the "
        f"DLT's page in the console, or {other} DLT {dlt.dlt_id} with expected_state '{dlt.state}': the arm's 3+3 "
        "is then reassessed."
    )


def _changed(dlt: DecidedDlt, look: DataLook, kind: Divergence) -> str:
    arm = dlt.arm or "unknown"
    if kind is Divergence.NO_LONGER_MEETS:
        criterion = f"the DLT criterion '{dlt.decided_criterion}'" if dlt.decided_criterion else "the DLT criterion"
        return (
            f"{_what(dlt, look)}: {_changes(dlt, look)}; the AE no longer meets {criterion} it was confirmed under "
            f"({look.reason}). {_decision(dlt)}: the confirmation stands, and the DLT still counts in arm {arm}'s "
            f"3+3 tally, until the committee revises it. {_how_to_revise(dlt)}"
        )
    meets = f"DLT criterion '{look.criterion}'" if look.criterion else "a DLT criterion"
    if kind is Divergence.RECODED and dlt.state == DltState.REJECTED.value:
        return (
            f"{_what(dlt, look)}: {_changes(dlt, look)}; the AE is now another event than the one rejected, and meets "
            f"{meets} ({look.reason}). {_decision(dlt)} about '{dlt.decided_term}': the rejection stands, and the DLT "
            f"does not count in arm {arm}'s 3+3 tally, but the DLT listing and the dose-escalation minutes now name "
            f"'{look.term}', an event the committee never adjudicated (the attribution that rejected it may not hold "
            "for it). If the recode is the site's mistake, the site corrects it; if not, the committee rejects the "
            f"DLT again as '{look.term}' or revises it. {_how_to_revise(dlt)}"
        )
    if kind is Divergence.RECODED:
        criterion = f"the criterion '{dlt.decided_criterion}'" if dlt.decided_criterion else "a DLT criterion"
        return (
            f"{_what(dlt, look)}: {_changes(dlt, look)}; the AE is now another event than the one confirmed, and still "
            f"meets {criterion} it was confirmed under ({look.reason}). {_decision(dlt)} about '{dlt.decided_term}': "
            f"the confirmation stands, and the DLT counts in arm {arm}'s 3+3 tally as confirmed, but the DLT listing "
            f"and the dose-escalation minutes now name '{look.term}', an event the committee never adjudicated (its "
            "attribution may differ). If the recode is the site's mistake, the site corrects it; if not, the "
            f"committee confirms the DLT as '{look.term}' or revises it. {_how_to_revise(dlt)}"
        )
    if kind is Divergence.OTHER_EVENT:
        criterion = f"'{dlt.decided_criterion}'" if dlt.decided_criterion else "it was confirmed under"
        return (
            f"{_what(dlt, look)}: {_changes(dlt, look)}; the AE is now another event than the one confirmed, and meets "
            f"{meets} ({look.reason}), not the criterion {criterion} the confirmation judged. {_decision(dlt)} "
            f"about the event as it was then: a confirmation does not carry over to an event no one reviewed, so DLT "
            f"{dlt.dlt_id} is suspected again, with its own review clock, and counts in arm {arm}'s 3+3 tally as "
            "under review, not as a confirmed DLT, until the committee confirms or rejects it under its new "
            "criterion. If the recode is the site's mistake, the site corrects it and the confirmation stands again."
        )
    if kind is Divergence.NOW_MEETS:
        news = f"{_changes(dlt, look)}; the AE now meets {meets}, which it did not when rejected ({look.reason})"
    else:
        news = (
            f"the investigator's relatedness rose from {_said(dlt.decided_relatedness)}, as the committee saw it, "
            f"to {_said(look.relatedness)}; the AE meets {meets} ({look.reason})"
        )
    return (
        f"{_what(dlt, look)}: {news}. {_decision(dlt)}: the rejection stands, and the DLT does not count in arm "
        f"{arm}'s 3+3 tally, until the committee revises it. {_how_to_revise(dlt)}"
    )


def _restored(dlt: DecidedDlt, look: DataLook, before: Divergence) -> str:
    if before is Divergence.RECODED:
        now = f"the AE is again reported as '{look.term}', the event {decision_on_file(dlt) or 'decided on'}"
    elif dlt.state == DltState.CONFIRMED.value:
        now = f"the AE meets DLT criterion '{look.criterion}' again" if look.criterion else "the AE meets it again"
    else:
        now = "the AE is no longer more clearly a DLT than when it was rejected"
    if not dlt.ae_id.startswith("lab:"):
        now += f" (relatedness {_said(look.relatedness)})"
    return (
        f"{_what(dlt, look)}: {now}. {_decision(dlt)}: the earlier finding "
        "that the data it relied on had changed no longer holds; the decision stands, and nothing needs revising on "
        "that account."
    )
