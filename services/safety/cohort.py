"""Pure: the 3+3 (or any initial/expanded) cohort rule per arm, from each subject's evaluability and DLTs.

Counts are of *subjects* with a DLT (a subject with two DLTs counts once, as 3+3 counts patients).
Confirmed DLTs decide the cohort; suspected ones are shown beside them. The stopping signal counts
confirmed and suspected together, so that the review starts the moment the stopping number could be
reached, not days later when an officer has confirmed the second one.

A subject is evaluable once their DLT window has closed, or they had a confirmed DLT.
Decisions, with the protocol's CohortRules (defaults 3/6, 0, 1, 2):
- confirmed >= stop_at_dlts, or more than max_dlts_to_escalate_expanded: `stop` (escalation stops);
- more than max_dlts_to_escalate: the arm needs the expanded cohort: `expand` until expanded_size are
  enrolled, then `evaluating` until they are all evaluable, then `escalate`;
- otherwise `enrolling` until initial_size are enrolled, `evaluating` until every enrolled subject is
  evaluable, then `escalate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.events import CohortDecisionName
from shared.protocol import CohortRules, Protocol


@dataclass(frozen=True)
class SubjectOutcome:
    subject_id: str
    arm: str
    evaluable: bool
    confirmed_dlt: bool
    suspected_dlt: bool


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


@dataclass(frozen=True)
class Deviation:
    kind: str
    detail: str


def assess_arm(
    arm: str, subjects: Sequence[SubjectOutcome], *, rules: CohortRules, next_arm: str | None
) -> ArmAssessment:
    mine = [s for s in subjects if s.arm == arm]
    enrolled = len(mine)
    evaluable = sum(1 for s in mine if s.evaluable or s.confirmed_dlt)
    confirmed = sum(1 for s in mine if s.confirmed_dlt)
    suspected = sum(1 for s in mine if s.suspected_dlt and not s.confirmed_dlt)
    stopping = confirmed + suspected >= rules.stop_at_dlts
    decision, reason = _decide(enrolled, evaluable, confirmed, rules=rules, next_arm=next_arm)
    if suspected:
        reason += f"; {suspected} suspected DLT(s) awaiting review are not counted for this decision"
    if stopping and decision != "stop":
        reason += (
            f"; stopping rule: {confirmed} confirmed + {suspected} suspected >= {rules.stop_at_dlts}"
            " (suspected DLTs count for the stopping signal so the review starts at once)"
        )
    return ArmAssessment(arm, enrolled, evaluable, confirmed, suspected, decision, stopping, next_arm, reason)


def _decide(
    enrolled: int, evaluable: int, confirmed: int, *, rules: CohortRules, next_arm: str | None
) -> tuple[CohortDecisionName, str]:
    counts = f"{confirmed} confirmed DLT(s), {evaluable}/{enrolled} evaluable"
    onward = f"escalate to arm {next_arm}" if next_arm else "highest arm cleared"
    if confirmed >= rules.stop_at_dlts or confirmed > rules.max_dlts_to_escalate_expanded:
        return "stop", f"{counts}: >= {rules.stop_at_dlts} DLTs, stop escalation"
    if confirmed > rules.max_dlts_to_escalate:
        if enrolled < rules.expanded_size:
            return "expand", f"{counts}: more than {rules.max_dlts_to_escalate}, expand to {rules.expanded_size}"
        if evaluable < enrolled:
            return "evaluating", f"{counts}: expanded cohort of {enrolled} still in observation"
        return "escalate", f"{counts}: at most {rules.max_dlts_to_escalate_expanded} of {enrolled}, {onward}"
    if enrolled < rules.initial_size:
        return "enrolling", f"{counts}: {enrolled} of {rules.initial_size} enrolled"
    if evaluable < enrolled:
        return "evaluating", f"{counts}: cohort of {enrolled} still in observation"
    return "escalate", f"{counts}: at most {rules.max_dlts_to_escalate} of {enrolled}, {onward}"


def assess_arms(protocol: Protocol, subjects: Sequence[SubjectOutcome]) -> list[ArmAssessment]:
    """Every arm of the protocol, in escalation order."""
    ids = [arm.id for arm in protocol.arms]
    return [
        assess_arm(arm, subjects, rules=protocol.cohort, next_arm=ids[i + 1] if i + 1 < len(ids) else None)
        for i, arm in enumerate(ids)
    ]


def enrolment_deviations(arm: str, *, protocol: Protocol, arms: Mapping[str, ArmAssessment]) -> list[Deviation]:
    """Deviations of enrolling one more subject into `arm`, judged on the arms as they stood (without them)."""
    ids = [a.id for a in protocol.arms]
    deviations = []
    position = ids.index(arm)
    if position > 0:
        predecessor = arms[ids[position - 1]]
        if predecessor.decision != "escalate":
            deviations.append(
                Deviation(
                    "enrolled_before_predecessor_cleared",
                    f"arm {predecessor.arm} has not cleared (decision '{predecessor.decision}': {predecessor.reason})",
                )
            )
    own = arms[arm]
    if own.decision == "stop":
        deviations.append(Deviation("enrolled_in_stopped_arm", f"arm {arm} stopped escalation: {own.reason}"))
    rules = protocol.cohort
    if own.enrolled + 1 > rules.expanded_size:
        deviations.append(
            Deviation(
                "arm_over_capacity",
                f"arm {arm} already has {own.enrolled} subject(s); the protocol allows {rules.expanded_size}",
            )
        )
    elif own.enrolled + 1 > cohort_size(own, rules=rules):
        deviations.append(
            Deviation(
                "over_cohort_size",
                f"arm {arm} already has {own.enrolled} subject(s) and its cohort is {rules.initial_size}: with "
                f"{own.dlt_confirmed} confirmed DLT(s) there is no decision to expand to {rules.expanded_size}",
            )
        )
    return deviations


def cohort_size(arm: ArmAssessment, *, rules: CohortRules) -> int:
    """How many subjects the arm's current decision allows: the expanded size only once DLTs call for it.

    Suspected DLTs do not count: an expansion waits for the officer's confirmation, like every decision here.
    """
    return rules.expanded_size if arm.dlt_confirmed > rules.max_dlts_to_escalate else rules.initial_size
