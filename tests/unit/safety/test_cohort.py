"""The 3+3 rule, pure: every path of the classic design, the stopping signal, and enrolment deviations."""

from __future__ import annotations

import pytest

from services.safety.cohort import ArmAssessment, SubjectOutcome, assess_arm, assess_arms, enrolment_deviations
from shared.protocol import CohortRules, Protocol

RULES = CohortRules()


def subjects(
    arm: str = "A", *, evaluable: int = 0, pending: int = 0, confirmed: int = 0, suspected: int = 0
) -> list[SubjectOutcome]:
    """`confirmed` and `suspected` subjects come first; evaluable/pending are the DLT-free rest."""
    out = []
    for i in range(confirmed):
        out.append(SubjectOutcome(f"{arm}-c{i}", arm, evaluable=False, confirmed_dlt=True, suspected_dlt=False))
    for i in range(suspected):
        out.append(SubjectOutcome(f"{arm}-s{i}", arm, evaluable=False, confirmed_dlt=False, suspected_dlt=True))
    for i in range(evaluable):
        out.append(SubjectOutcome(f"{arm}-e{i}", arm, evaluable=True, confirmed_dlt=False, suspected_dlt=False))
    for i in range(pending):
        out.append(SubjectOutcome(f"{arm}-p{i}", arm, evaluable=False, confirmed_dlt=False, suspected_dlt=False))
    return out


def decide(**counts: int) -> ArmAssessment:
    return assess_arm("A", subjects(**counts), rules=RULES, next_arm="B")


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


def test_counts_are_reported() -> None:
    result = decide(confirmed=1, suspected=1, evaluable=2, pending=1)
    assert (result.enrolled, result.evaluable, result.dlt_confirmed, result.dlt_suspected) == (5, 3, 1, 1)
    assert result.next_arm == "B"


def test_suspected_dlts_fire_the_stopping_rule_but_do_not_decide() -> None:
    result = decide(confirmed=1, suspected=1, evaluable=1)
    assert result.stopping
    assert result.decision == "expand"
    assert "1 confirmed + 1 suspected >= 2" in result.reason
    assert "review starts at once" in result.reason
    assert not decide(suspected=1, evaluable=2).stopping
    assert decide(suspected=2, evaluable=1).stopping


def test_suspected_dlts_are_shown_but_not_counted_for_escalation() -> None:
    result = decide(suspected=1, evaluable=2)
    assert result.decision == "evaluating"  # the suspected subject is not yet evaluable
    assert "not counted" in result.reason


def test_the_highest_arm_clears_without_a_next_arm() -> None:
    result = assess_arm("C", subjects("C", evaluable=3), rules=RULES, next_arm=None)
    assert result.decision == "escalate" and "highest arm cleared" in result.reason


def test_other_rules_are_read_from_the_protocol() -> None:
    strict = CohortRules(initial_size=2, expanded_size=4, max_dlts_to_escalate=0, max_dlts_to_escalate_expanded=0)
    result = assess_arm("A", subjects(evaluable=2), rules=strict, next_arm=None)
    assert result.decision == "escalate"
    assert assess_arm("A", subjects(confirmed=1, evaluable=3), rules=strict, next_arm=None).decision == "stop"


def test_other_arms_subjects_do_not_count(protocol: Protocol) -> None:
    arms = assess_arms(protocol, [*subjects("A", evaluable=3), *subjects("B", pending=1)])
    assert [(a.arm, a.decision, a.enrolled) for a in arms] == [
        ("A", "escalate", 3),
        ("B", "enrolling", 1),
        ("C", "enrolling", 0),
    ]
    assert [a.next_arm for a in arms] == ["B", "C", None]


def test_enrolling_after_the_predecessor_cleared_is_fine(protocol: Protocol) -> None:
    arms = {a.arm: a for a in assess_arms(protocol, subjects("A", evaluable=3))}
    assert enrolment_deviations("B", protocol=protocol, arms=arms) == []


def test_a_fourth_subject_without_an_expansion_decision_is_over_the_cohort_size(protocol: Protocol) -> None:
    """0/3 escalates to the next arm; 3+3 has no place for a 4th subject here until a DLT calls for expansion."""
    cleared = {a.arm: a for a in assess_arms(protocol, subjects("A", evaluable=3))}
    [deviation] = enrolment_deviations("A", protocol=protocol, arms=cleared)
    assert deviation.kind == "over_cohort_size" and "3 subject(s)" in deviation.detail
    observing = {a.arm: a for a in assess_arms(protocol, subjects("A", pending=3))}
    assert [d.kind for d in enrolment_deviations("A", protocol=protocol, arms=observing)] == ["over_cohort_size"]
    suspected_only = {a.arm: a for a in assess_arms(protocol, subjects("A", suspected=1, evaluable=2))}
    assert [d.kind for d in enrolment_deviations("A", protocol=protocol, arms=suspected_only)] == ["over_cohort_size"]
    expanding = {a.arm: a for a in assess_arms(protocol, subjects("A", confirmed=1, evaluable=2))}
    assert enrolment_deviations("A", protocol=protocol, arms=expanding) == [], "1/3 confirmed: expand to 6"
    filling = {a.arm: a for a in assess_arms(protocol, subjects("A", evaluable=2))}
    assert enrolment_deviations("A", protocol=protocol, arms=filling) == [], "the 3rd of 3"


def test_enrolling_before_the_predecessor_cleared_is_a_deviation(protocol: Protocol) -> None:
    arms = {a.arm: a for a in assess_arms(protocol, subjects("A", evaluable=2, pending=1))}
    [deviation] = enrolment_deviations("B", protocol=protocol, arms=arms)
    assert deviation.kind == "enrolled_before_predecessor_cleared"
    assert "arm A" in deviation.detail and "evaluating" in deviation.detail


def test_enrolling_into_a_stopped_or_full_arm_is_a_deviation(protocol: Protocol) -> None:
    stopped = {a.arm: a for a in assess_arms(protocol, subjects("A", confirmed=2, evaluable=1))}
    assert [d.kind for d in enrolment_deviations("A", protocol=protocol, arms=stopped)] == ["enrolled_in_stopped_arm"]
    full = {a.arm: a for a in assess_arms(protocol, subjects("A", confirmed=1, evaluable=5))}
    assert [d.kind for d in enrolment_deviations("A", protocol=protocol, arms=full)] == ["arm_over_capacity"]
