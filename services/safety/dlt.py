"""Pure: does an AE meet the protocol's DLT criteria, and how does its DLT record move when it changes?

Automatic classification only ever gives a *suspected* DLT; a safety officer confirms or rejects it.
Decisions made where the protocol leaves room (each is stated in the reason a person reads):
- The AE's grade is the worst grade any of its versions reported (CTCAE grades an AE by its worst
  severity; a lower follow-up grade is the AE improving). Term, relatedness and onset come from the
  latest version, so a follow-up that says "not related" withdraws the suspicion.
- Relatedness not yet assessed counts as related (the usual convention for expedited safety review) until
  the site says otherwise.
- Protocol haematological terms count, under any criterion, only when the AE grade is worse than the
  subject's baseline lab grade for that CTCAE term (when `only_if_worse_than_baseline`); with no baseline
  lab for the term, baseline is taken as grade 0.
- A confirmed DLT stays confirmed whatever follow-ups say (the officer's decision stands); a rejected one
  reopens only if a later version is graded worse than the grade the officer rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from services.safety.dlt_window import DltWindow, place_onset
from shared.events import Relatedness
from shared.protocol import RELATEDNESS_ORDER, DltCriterion, DltRules

HAEMATOLOGICAL = "haematological"


class DltState(StrEnum):
    SUSPECTED = "suspected"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class DltSignal(StrEnum):
    SUSPECTED = "dlt.suspected"
    WITHDRAWN = "dlt.withdrawn"


@dataclass(frozen=True)
class AeFacts:
    """One AE folded over its versions, as the DLT rule sees it."""

    ae_id: str
    version: int
    term: str
    grade: int | None
    relatedness: Relatedness | None
    onset: str | None
    status: str | None = None
    """A site status (entered_in_error, deleted) that takes the AE out of consideration; None: active."""


@dataclass(frozen=True)
class Classification:
    meets: bool
    criterion: str | None
    reason: str


@dataclass(frozen=True)
class Transition:
    state: DltState | None
    signal: DltSignal | None


def fold_versions(versions: list[AeFacts]) -> AeFacts:
    """The latest version's facts with the worst grade of all versions."""
    if not versions:
        raise ValueError("an AE needs at least one version")
    latest = max(versions, key=lambda v: v.version)
    grades = [v.grade for v in versions if v.grade is not None]
    return AeFacts(
        ae_id=latest.ae_id,
        version=latest.version,
        term=latest.term,
        grade=max(grades) if grades else None,
        relatedness=latest.relatedness,
        onset=latest.onset,
        status=latest.status,
    )


def related_enough(relatedness: Relatedness | None, minimum: str) -> bool:
    if relatedness is None:
        return True
    return RELATEDNESS_ORDER.index(relatedness.value) >= RELATEDNESS_ORDER.index(minimum)


def _criterion_applies(criterion: DltCriterion, ae: AeFacts, *, grade: int, haematological: bool) -> str | None:
    """Why the criterion does not apply, or None when it does."""
    if grade < criterion.min_grade:
        return f"grade {grade} < {criterion.min_grade}"
    if criterion.terms and ae.term.casefold() not in {t.casefold() for t in criterion.terms}:
        return "term not listed"
    if criterion.exclude_haematological and haematological:
        return "haematological term"
    if criterion.min_relatedness is not None and not related_enough(ae.relatedness, criterion.min_relatedness):
        return f"relatedness {ae.relatedness} below {criterion.min_relatedness}"
    return None


def classify(
    ae: AeFacts, *, rules: DltRules, window: DltWindow | None, baseline_grades: Mapping[str, int]
) -> Classification:
    """Whether the AE is a suspected DLT, with the reason in words a safety officer can check.

    `baseline_grades` maps CTCAE terms (any case) to the subject's baseline lab grade.
    """
    label = f"grade {ae.grade} '{ae.term}'" if ae.grade is not None else f"ungraded '{ae.term}'"
    if ae.status is not None:
        return Classification(False, None, f"{label}: the site marked this AE {ae.status.replace('_', ' ')}")
    if window is None:
        anchor = "first infusion" if rules.anchor == "first_infusion" else "enrolment"
        return Classification(False, None, f"{label}: no DLT window yet (no {anchor} recorded)")
    if ae.grade is None:
        return Classification(False, None, f"{label}: no grade reported yet")
    placement = place_onset(window, ae.onset)
    if not placement.inside:
        return Classification(False, None, f"{label}: {placement.explanation}")
    haem_rule = rules.haematological
    haem_terms = {t.casefold() for t in haem_rule.terms} if haem_rule else set()
    haematological = ae.term.casefold() in haem_terms
    baselines = {term.casefold(): grade for term, grade in baseline_grades.items()}
    baseline = baselines.get(ae.term.casefold())
    worse_needed = haematological and haem_rule is not None and haem_rule.only_if_worse_than_baseline
    if worse_needed and ae.grade <= (baseline or 0):
        return Classification(
            False, None, f"{label}: haematological and not worse than the subject's baseline grade {baseline}"
        )
    notes = [placement.explanation]
    if ae.relatedness is None:
        notes.append("relatedness not yet assessed: treated as related until the site says otherwise")
    if haematological:
        notes.append(
            f"worse than baseline grade {baseline}" if baseline is not None else "no baseline lab grade for this term"
        )
    for criterion in rules.criteria:
        if _criterion_applies(criterion, ae, grade=ae.grade, haematological=haematological) is None:
            relation = f" ({ae.relatedness.value})" if ae.relatedness else ""
            reason = f"{label}{relation} meets {criterion.name}: {criterion.description}; " + "; ".join(notes)
            return Classification(True, criterion.name, reason)
    if haematological and haem_rule is not None and ae.grade >= haem_rule.min_grade:
        reason = f"{label} meets {HAEMATOLOGICAL}: grade >= {haem_rule.min_grade}; " + "; ".join(notes)
        return Classification(True, HAEMATOLOGICAL, reason)
    misses = [
        f"{c.name}: {why}"
        for c in rules.criteria
        if (why := _criterion_applies(c, ae, grade=ae.grade, haematological=haematological)) is not None
    ]
    return Classification(False, None, f"{label}: meets no DLT criterion ({'; '.join(misses)})")


def transition(
    current: DltState | None, classification: Classification, *, grade: int | None, decided_grade: int | None
) -> Transition:
    """The next state of an AE's DLT record, and the signal that change sends (if any)."""
    meets = classification.meets
    if current is None:
        return Transition(DltState.SUSPECTED, DltSignal.SUSPECTED) if meets else Transition(None, None)
    if current is DltState.SUSPECTED:
        return Transition(current, None) if meets else Transition(DltState.WITHDRAWN, DltSignal.WITHDRAWN)
    if current is DltState.WITHDRAWN:
        return Transition(DltState.SUSPECTED, DltSignal.SUSPECTED) if meets else Transition(current, None)
    if current is DltState.REJECTED and meets and (grade or 0) > (decided_grade or 0):
        return Transition(DltState.SUSPECTED, DltSignal.SUSPECTED)
    return Transition(current, None)
