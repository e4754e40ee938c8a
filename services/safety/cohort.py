"""Pure: the 3+3 (or any initial/expanded) decision per arm and the recommended dose, from per-subject outcomes.

What counts (`cohort.count`): `subjects` with >= 1 DLT (the usual 3+3 reading: a subject with two DLTs counts
once) or DLT `events`. Confirmed DLTs decide; suspected ones can only hold a decision back, never move it on:
- `stop`: confirmed >= stop_at_dlts, or more than max_dlts_to_escalate_expanded: escalation stops.
- `hold`: confirmed + suspected >= stop_at_dlts: the stopping rule is reached if the suspicions are
  confirmed; nothing moves until the review ends (enrolment into this or a higher arm is a deviation).
- `awaiting_dlt_review`: any suspected DLT open in the arm: never `escalate` (nor expand) on an open question;
  the reason says what the decision will be if it is confirmed and if it is rejected.
- otherwise, on confirmed DLTs: more than max_dlts_to_escalate needs the expanded cohort (`expand` until
  expanded_size subjects count, then `evaluating`, then `escalate`); else `enrolling` until initial_size
  count, `evaluating` until every counted subject is evaluable, then `escalate`.
Subjects who can no longer be evaluated (withdrawn without a DLT, 1 of 4 infusions...) do not count towards
the size: the arm shows how many replacements it needs and waits for them.

The recommended dose (`recommend`): the arm below the first stopped arm (the MTD), or the highest arm once it
cleared (MTD not reached), and only once every arm below it has cleared too (a review or an expansion still open
below can stop that arm and move the MTD down). With `confirm_recommended_dose` that arm must first have
expanded_size subjects (an arm that cleared at 0/3 `expand`s to 6); then it is `recommend`, and the trial's
recommendation names it with the reason. If the first arm stops, no dose is tolerated, and the recommendation says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from services.safety.evaluability import SubjectOutcome
from shared.events import CohortDecisionName
from shared.protocol import CohortRules, Protocol

RecommendationBasis = Literal["mtd", "highest_arm_cleared", "no_tolerated_dose", "withdrawn"]
UNDER_REVIEW_DECISIONS: frozenset[str] = frozenset({"hold", "awaiting_dlt_review"})


@dataclass(frozen=True)
class ArmTally:
    """An arm's counts, summed from its subjects' stored outcomes."""

    arm: str
    enrolled: int = 0
    """Subjects in the arm (withdrawn ones too; not the excluded)."""
    evaluable: int = 0
    """DLT-free evaluable subjects plus subjects with a confirmed DLT."""
    not_evaluable: int = 0
    under_review: int = 0
    subjects_confirmed: int = 0
    subjects_suspected: int = 0
    """Subjects with a suspected DLT open and none confirmed."""
    events_confirmed: int = 0
    events_suspected: int = 0


def tally(arm: str, outcomes: Sequence[SubjectOutcome]) -> ArmTally:
    mine = [o for o in outcomes if o.arm == arm and o.outcome != "excluded"]
    return ArmTally(
        arm=arm,
        enrolled=len(mine),
        evaluable=sum(1 for o in mine if o.evaluable),
        not_evaluable=sum(1 for o in mine if o.outcome == "not_evaluable"),
        under_review=sum(1 for o in mine if o.outcome == "under_review"),
        subjects_confirmed=sum(1 for o in mine if o.dlt_confirmed),
        subjects_suspected=sum(1 for o in mine if o.dlt_suspected and not o.dlt_confirmed),
        events_confirmed=sum(o.dlt_confirmed for o in mine),
        events_suspected=sum(o.dlt_suspected for o in mine),
    )


@dataclass(frozen=True)
class ArmAssessment:
    arm: str
    enrolled: int
    evaluable: int
    dlt_confirmed: int
    dlt_suspected: int
    decision: CohortDecisionName
    stopping: bool
    """Confirmed plus suspected DLTs reach stop_at_dlts: the stopping rule has fired."""
    next_arm: str | None
    reason: str
    not_evaluable: int = 0
    replacements_needed: int = 0

    @property
    def counted(self) -> int:
        return self.enrolled - self.not_evaluable


@dataclass(frozen=True)
class Recommendation:
    arm: str | None
    basis: RecommendationBasis
    reason: str


@dataclass(frozen=True)
class TrialAssessment:
    arms: list[ArmAssessment]
    recommendation: Recommendation | None

    def by_arm(self) -> dict[str, ArmAssessment]:
        return {a.arm: a for a in self.arms}


@dataclass(frozen=True)
class Deviation:
    kind: str
    detail: str
    pages: bool = False
    """A deviation that puts subjects at risk (enrolled above an arm under DLT review, held or stopped)."""


def counts(t: ArmTally, rules: CohortRules) -> tuple[int, int]:
    """(confirmed, suspected) as the protocol counts them: subjects or DLT events."""
    if rules.count == "events":
        return t.events_confirmed, t.events_suspected
    return t.subjects_confirmed, t.subjects_suspected


def _unit(rules: CohortRules) -> str:
    return "DLT(s)" if rules.count == "events" else "subject(s) with a DLT"


def _base(
    t: ArmTally, confirmed: int, *, rules: CohortRules, next_arm: str | None
) -> tuple[CohortDecisionName, str, int]:
    """The decision on `confirmed` DLTs alone: (decision, reason, replacements needed)."""
    counted = t.enrolled - t.not_evaluable
    unit = _unit(rules)
    head = f"{confirmed} {unit} confirmed, {t.evaluable}/{counted} evaluable"
    if t.not_evaluable:
        head += f" ({t.not_evaluable} not evaluable: to be replaced)"
    onward = f"escalate to arm {next_arm}" if next_arm else "highest arm cleared"
    if confirmed >= rules.stop_at_dlts or confirmed > rules.max_dlts_to_escalate_expanded:
        return "stop", f"{head}: >= {rules.stop_at_dlts} {unit}, stop escalation", 0
    expanding = confirmed > rules.max_dlts_to_escalate
    size = rules.expanded_size if expanding else rules.initial_size
    if counted < size:
        replacements = min(t.not_evaluable, size - counted)
        needs = f"; {replacements} replacement(s) needed" if replacements else ""
        if expanding:
            return "expand", f"{head}: more than {rules.max_dlts_to_escalate}, expand to {size}{needs}", replacements
        return "enrolling", f"{head}: {counted} of {size} counted{needs}", replacements
    if t.evaluable < counted:
        return "evaluating", f"{head}: cohort of {counted} still in observation", 0
    limit = rules.max_dlts_to_escalate_expanded if expanding else rules.max_dlts_to_escalate
    return "escalate", f"{head}: at most {limit} of {counted}, {onward}", 0


def assess_arm(t: ArmTally, *, rules: CohortRules, next_arm: str | None) -> ArmAssessment:
    confirmed, suspected = counts(t, rules)
    stopping = confirmed + suspected >= rules.stop_at_dlts
    decision, reason, replacements = _base(t, confirmed, rules=rules, next_arm=next_arm)
    if decision != "stop" and suspected:
        settled = replace(t, evaluable=t.evaluable + t.under_review)  # a decided review makes them evaluable
        if_confirmed, _, _ = _base(settled, confirmed + suspected, rules=rules, next_arm=next_arm)
        if_rejected, _, _ = _base(settled, confirmed, rules=rules, next_arm=next_arm)
        branches = f"if confirmed: {if_confirmed}; if rejected: {if_rejected}"
        if stopping:
            reason = (
                f"hold: stopping rule reached with suspected DLTs, {confirmed} confirmed + {suspected} suspected"
                f" >= {rules.stop_at_dlts}; no enrolment into this or a higher arm until the review ends"
                f" ({branches}). {reason}"
            )
            decision = "hold"
        else:
            reason = (
                f"awaiting DLT review: {suspected} suspected {_unit(rules)} open; no escalation until it ends"
                f" ({branches}). {reason}"
            )
            decision = "awaiting_dlt_review"
        replacements = 0
    return ArmAssessment(
        arm=t.arm,
        enrolled=t.enrolled,
        evaluable=t.evaluable,
        dlt_confirmed=confirmed,
        dlt_suspected=suspected,
        decision=decision,
        stopping=stopping,
        next_arm=next_arm,
        reason=reason,
        not_evaluable=t.not_evaluable,
        replacements_needed=replacements,
    )


def assess_trial(protocol: Protocol, tallies: Mapping[str, ArmTally]) -> TrialAssessment:
    """Every arm in escalation order, then the recommended dose across them."""
    rules = protocol.cohort
    ids = [arm.id for arm in protocol.arms]
    arms = [
        assess_arm(tallies.get(arm) or ArmTally(arm), rules=rules, next_arm=ids[i + 1] if i + 1 < len(ids) else None)
        for i, arm in enumerate(ids)
    ]
    stopped = next((i for i, a in enumerate(arms) if a.decision == "stop"), None)
    if stopped == 0:
        reason = f"arm {arms[0].arm} stopped ({arms[0].reason}): no arm of the protocol is tolerated"
        return TrialAssessment(arms, Recommendation(None, "no_tolerated_dose", reason))
    candidate = stopped - 1 if stopped is not None else len(arms) - 1
    arm = arms[candidate]
    if arm.decision != "escalate" or any(a.decision != "escalate" for a in arms[:candidate]):
        return TrialAssessment(arms, None)  # an arm below still open (review, hold, expansion) can move the MTD
    basis: RecommendationBasis = "mtd" if stopped is not None else "highest_arm_cleared"
    why = (
        f"arm {arms[candidate + 1].arm} above it stopped escalation"
        if stopped is not None
        else "the highest arm cleared"
    )
    if rules.confirm_recommended_dose and arm.counted < rules.expanded_size:
        more = rules.expanded_size - arm.counted
        arms[candidate] = replace(
            arm,
            decision="expand",
            replacements_needed=min(arm.not_evaluable, more),
            reason=f"{why}: expand arm {arm.arm} to {rules.expanded_size} to confirm it as the recommended dose "
            f"({more} more subject(s)). {arm.reason}",
        )
        return TrialAssessment(arms, None)
    label = "maximum tolerated dose" if basis == "mtd" else "highest planned arm, MTD not reached"
    reason = (
        f"recommended dose: arm {arm.arm} ({label}): {why}; arm {arm.arm} has {arm.dlt_confirmed} "
        f"{_unit(rules)} of {arm.counted} evaluable"
    )
    arms[candidate] = replace(arm, decision="recommend", reason=f"{reason}. {arm.reason}")
    return TrialAssessment(arms, Recommendation(arm.arm, basis, reason))


def enrolment_deviations(arm: str, *, protocol: Protocol, arms: Mapping[str, ArmAssessment]) -> list[Deviation]:
    """Deviations of enrolling one more subject into `arm`, judged on the arms as they stood (without them)."""
    ids = [a.id for a in protocol.arms]
    deviations = []
    position = ids.index(arm)
    for lower in ids[:position]:
        state = arms[lower]
        if state.decision in ("hold", "stop", "awaiting_dlt_review"):
            what = {"hold": "is on hold", "stop": "stopped escalation", "awaiting_dlt_review": "has a DLT under review"}
            deviations.append(
                Deviation(
                    f"enrolled_above_arm_{state.decision}",
                    f"arm {lower} below it {what[state.decision]}: {state.reason}",
                    pages=True,
                )
            )
    if position > 0 and not deviations:
        predecessor = arms[ids[position - 1]]
        if predecessor.decision != "escalate":
            deviations.append(
                Deviation(
                    "enrolled_before_predecessor_cleared",
                    f"arm {predecessor.arm} has not cleared (decision '{predecessor.decision}': {predecessor.reason})",
                )
            )
    own = arms[arm]
    if own.decision in ("stop", "hold"):
        kind = "enrolled_in_stopped_arm" if own.decision == "stop" else "enrolled_in_held_arm"
        deviations.append(Deviation(kind, f"arm {arm} decision '{own.decision}': {own.reason}", pages=True))
    rules = protocol.cohort
    if own.counted + 1 > rules.expanded_size:
        deviations.append(
            Deviation(
                "arm_over_capacity",
                f"arm {arm} already counts {own.counted} subject(s); the protocol allows {rules.expanded_size}",
            )
        )
    elif own.counted + 1 > cohort_size(own, rules=rules):
        deviations.append(
            Deviation(
                "over_cohort_size",
                f"arm {arm} already counts {own.counted} subject(s) and its cohort is {rules.initial_size}: with "
                f"{own.dlt_confirmed} confirmed DLT(s) there is no decision to expand to {rules.expanded_size}",
            )
        )
    return deviations


def cohort_size(arm: ArmAssessment, *, rules: CohortRules) -> int:
    """How many subjects the arm's current decision allows: the expanded size only once a decision calls for it.

    Suspected DLTs do not count: an expansion waits for the officer's confirmation, like every decision here.
    """
    expanding = arm.dlt_confirmed > rules.max_dlts_to_escalate or arm.decision in ("expand", "recommend")
    return rules.expanded_size if expanding else rules.initial_size
