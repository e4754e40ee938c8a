"""The 3+3 rule, pure: every path of the classic design, review holds, replacements, the recommended dose, and
enrolment deviations."""

from __future__ import annotations

import pytest

from services.safety.cohort import (
    ArmAssessment,
    ArmTally,
    assess_arm,
    assess_trial,
    enrolment_deviations,
    tally,
)
from services.safety.evaluability import SubjectOutcome
from shared.protocol import CohortRules, Protocol

RULES = CohortRules()


def subjects(
    arm: str = "A",
    *,
    evaluable: int = 0,
    pending: int = 0,
    confirmed: int = 0,
    suspected: int = 0,
    not_evaluable: int = 0,
    events_each: int = 1,
) -> list[SubjectOutcome]:
    """`confirmed` and `suspected` subjects come first; evaluable/pending/not_evaluable are the DLT-free rest."""
    out = []
    for i in range(confirmed):
        out.append(SubjectOutcome(f"{arm}-c{i}", arm, "dlt", dlt_confirmed=events_each))
    for i in range(suspected):
        out.append(SubjectOutcome(f"{arm}-s{i}", arm, "under_review", dlt_suspected=1))
    for i in range(evaluable):
        out.append(SubjectOutcome(f"{arm}-e{i}", arm, "evaluable"))
    for i in range(pending):
        out.append(SubjectOutcome(f"{arm}-p{i}", arm, "pending"))
    for i in range(not_evaluable):
        out.append(SubjectOutcome(f"{arm}-n{i}", arm, "not_evaluable"))
    return out


def decide(rules: CohortRules = RULES, **counts: int) -> ArmAssessment:
    return assess_arm(tally("A", subjects(**counts)), rules=rules, next_arm="B")


def trial(protocol: Protocol, **arms: list[SubjectOutcome]) -> dict[str, ArmAssessment]:
    outcomes = [o for group in arms.values() for o in group]
    return assess_trial(protocol, {a.id: tally(a.id, outcomes) for a in protocol.arms}).by_arm()


@pytest.mark.parametrize(
    ("counts", "decision"),
    [
        ({}, "enrolling"),
        ({"pending": 2}, "enrolling"),
        ({"pending": 3}, "evaluating"),
        ({"evaluable": 2, "pending": 1}, "evaluating"),
        ({"evaluable": 3}, "escalate"),  # 0/3
        ({"confirmed": 1, "evaluable": 2}, "expand"),  # 1/3
        ({"confirmed": 1}, "expand"),  # one DLT already means six are needed
        ({"confirmed": 1, "evaluable": 2, "pending": 3}, "evaluating"),  # 1/3 + 3 more in observation
        ({"confirmed": 1, "evaluable": 5}, "escalate"),  # 1/3 -> 0/3 more: 1/6
        ({"confirmed": 2, "evaluable": 4}, "stop"),  # 1/3 -> 1/3 more: 2/6
        ({"confirmed": 2, "evaluable": 1}, "stop"),  # 2/3
        ({"confirmed": 2}, "stop"),  # 2 of 2 so far: no need to wait
        ({"confirmed": 3}, "stop"),
    ],
)
def test_three_plus_three(counts: dict[str, int], decision: str) -> None:
    assert decide(**counts).decision == decision


# --- point 1: never escalate while a DLT is under review ------------------------------------------------------


def test_three_of_three_with_one_suspected_awaits_review_never_escalates() -> None:
    result = decide(suspected=1, evaluable=2)
    assert result.decision == "awaiting_dlt_review"
    assert "if confirmed: expand; if rejected: escalate" in result.reason
    six = decide(confirmed=1, suspected=0, evaluable=5)
    assert six.decision == "escalate"
    assert decide(suspected=1, evaluable=5).decision == "awaiting_dlt_review"


def test_an_open_suspicion_holds_even_a_cohort_that_would_otherwise_escalate() -> None:
    result = decide(suspected=1, evaluable=3)  # 3 DLT-free evaluable + a 4th under review
    assert result.decision == "awaiting_dlt_review"
    assert "if rejected: escalate" in result.reason and not result.stopping


# --- point 2: the stopping rule holds ------------------------------------------------------------------------


def test_one_confirmed_plus_one_suspected_of_six_holds_instead_of_escalating() -> None:
    result = decide(confirmed=1, suspected=1, evaluable=4)
    assert result.decision == "hold"
    assert result.stopping
    assert "1 confirmed + 1 suspected >= 2" in result.reason
    assert "if confirmed: stop" in result.reason


def test_two_suspected_hold_and_one_suspected_does_not_fire_the_stopping_rule() -> None:
    assert decide(suspected=2, evaluable=1).decision == "hold"
    assert not decide(suspected=1, evaluable=2).stopping


# --- point 3: evaluability and replacements ------------------------------------------------------------------


def test_a_subject_who_cannot_be_evaluated_needs_a_replacement_and_the_decision_waits() -> None:
    result = decide(evaluable=2, not_evaluable=1)
    assert result.decision == "enrolling"
    assert result.replacements_needed == 1
    assert "1 replacement(s) needed" in result.reason
    assert decide(evaluable=3, not_evaluable=1).decision == "escalate"  # replaced: 0/3 evaluable


def test_replacements_in_an_expanded_cohort() -> None:
    result = decide(confirmed=1, evaluable=3, not_evaluable=2)
    assert result.decision == "expand" and result.replacements_needed == 2


# --- point 4: subjects or events ------------------------------------------------------------------------------


def test_subjects_count_once_and_events_count_each() -> None:
    one_subject_two_dlts = subjects(confirmed=1, evaluable=5, events_each=2)
    by_subjects = assess_arm(tally("A", one_subject_two_dlts), rules=RULES, next_arm="B")
    assert (by_subjects.decision, by_subjects.dlt_confirmed) == ("escalate", 1)
    events = CohortRules(count="events")
    by_events = assess_arm(tally("A", one_subject_two_dlts), rules=events, next_arm="B")
    assert (by_events.decision, by_events.dlt_confirmed) == ("stop", 2)


# --- point 5: the top arm and the recommended dose ------------------------------------------------------------


def test_the_top_arm_clearing_at_zero_of_three_expands_to_six_before_it_is_recommended(protocol: Protocol) -> None:
    cleared = dict(A=subjects("A", evaluable=3), B=subjects("B", evaluable=3))
    arms = trial(protocol, **cleared, C=subjects("C", evaluable=3))
    assert arms["C"].decision == "expand" and "recommended dose" in arms["C"].reason
    result = assess_trial(
        protocol, {a: tally(a, [o for g in cleared.values() for o in g] + subjects("C", evaluable=6)) for a in "ABC"}
    )
    assert result.by_arm()["C"].decision == "recommend"
    assert result.recommendation is not None
    assert (result.recommendation.arm, result.recommendation.basis) == ("C", "highest_arm_cleared")
    assert "arm C" in result.recommendation.reason


def test_without_confirmation_the_top_arm_is_recommended_at_zero_of_three(protocol: Protocol) -> None:
    relaxed = protocol.model_copy(update={"cohort": CohortRules(confirm_recommended_dose=False)})
    outcomes = subjects("A", evaluable=3) + subjects("B", evaluable=3) + subjects("C", evaluable=3)
    result = assess_trial(relaxed, {a: tally(a, outcomes) for a in "ABC"})
    assert result.recommendation is not None and result.recommendation.arm == "C"


def test_a_stopped_arm_makes_the_one_below_the_mtd_once_it_has_six(protocol: Protocol) -> None:
    outcomes = subjects("A", evaluable=3) + subjects("B", confirmed=2, evaluable=1)
    arms = trial(protocol, all=outcomes)
    assert arms["B"].decision == "stop"
    assert arms["A"].decision == "expand"  # 0/3 at the MTD candidate: confirm at 6
    full = subjects("A", evaluable=5, confirmed=1) + subjects("B", confirmed=2, evaluable=1)
    result = assess_trial(protocol, {a: tally(a, full) for a in "ABC"})
    assert result.recommendation is not None
    assert (result.recommendation.arm, result.recommendation.basis) == ("A", "mtd")


def test_the_first_arm_stopping_means_no_tolerated_dose(protocol: Protocol) -> None:
    result = assess_trial(protocol, {"A": tally("A", subjects("A", confirmed=2, evaluable=1))})
    assert result.recommendation is not None
    assert (result.recommendation.arm, result.recommendation.basis) == (None, "no_tolerated_dose")


# --- deviations ----------------------------------------------------------------------------------------------


def test_enrolling_after_the_predecessor_cleared_is_fine(protocol: Protocol) -> None:
    arms = trial(protocol, a=subjects("A", evaluable=3))
    assert enrolment_deviations("B", protocol=protocol, arms=arms) == []


def test_enrolling_above_an_arm_under_dlt_review_pages(protocol: Protocol) -> None:
    arms = trial(protocol, a=subjects("A", suspected=1, evaluable=2))
    [deviation] = enrolment_deviations("B", protocol=protocol, arms=arms)
    assert deviation.kind == "enrolled_above_arm_awaiting_dlt_review" and deviation.pages


def test_enrolling_into_or_above_a_held_arm_pages(protocol: Protocol) -> None:
    arms = trial(protocol, a=subjects("A", evaluable=3), b=subjects("B", confirmed=1, suspected=1, evaluable=1))
    assert arms["B"].decision == "hold"
    [above] = enrolment_deviations("C", protocol=protocol, arms=arms)
    assert above.kind == "enrolled_above_arm_hold" and above.pages
    own = enrolment_deviations("B", protocol=protocol, arms=arms)
    assert "enrolled_in_held_arm" in [d.kind for d in own] and all(d.pages for d in own if "held" in d.kind)


def test_a_fourth_subject_without_an_expansion_decision_is_over_the_cohort_size(protocol: Protocol) -> None:
    observing = trial(protocol, a=subjects("A", pending=3))
    assert [d.kind for d in enrolment_deviations("A", protocol=protocol, arms=observing)] == ["over_cohort_size"]
    expanding = trial(protocol, a=subjects("A", confirmed=1, evaluable=2))
    assert enrolment_deviations("A", protocol=protocol, arms=expanding) == [], "1/3 confirmed: expand to 6"
    filling = trial(protocol, a=subjects("A", evaluable=2))
    assert enrolment_deviations("A", protocol=protocol, arms=filling) == [], "the 3rd of 3"
    replacing = trial(protocol, a=subjects("A", evaluable=2, not_evaluable=1))
    assert enrolment_deviations("A", protocol=protocol, arms=replacing) == [], "a replacement is not over size"


def test_enrolling_before_the_predecessor_cleared_is_a_deviation(protocol: Protocol) -> None:
    arms = trial(protocol, a=subjects("A", evaluable=2, pending=1))
    [deviation] = enrolment_deviations("B", protocol=protocol, arms=arms)
    assert deviation.kind == "enrolled_before_predecessor_cleared"
    assert "arm A" in deviation.detail and "evaluating" in deviation.detail


def test_enrolling_into_a_stopped_or_full_arm_is_a_deviation(protocol: Protocol) -> None:
    stopped = trial(protocol, a=subjects("A", confirmed=2, evaluable=1))
    assert [d.kind for d in enrolment_deviations("A", protocol=protocol, arms=stopped)] == ["enrolled_in_stopped_arm"]
    full = trial(protocol, a=subjects("A", confirmed=1, evaluable=5))
    assert [d.kind for d in enrolment_deviations("A", protocol=protocol, arms=full)] == ["arm_over_capacity"]


def test_counts_are_reported() -> None:
    result = decide(confirmed=1, suspected=1, evaluable=2, pending=1)
    assert (result.enrolled, result.evaluable, result.dlt_confirmed, result.dlt_suspected) == (5, 3, 1, 1)
    assert ArmTally("A").enrolled == 0
