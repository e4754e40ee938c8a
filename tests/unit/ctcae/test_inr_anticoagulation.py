"""INR: CTCAE v5.0's "x baseline" criteria apply only to subjects on anticoagulation."""

from __future__ import annotations

from services.safety.ctcae import grade_test, grade_value

INR = "INR increased"


def test_not_anticoagulated_uses_fixed_cutoffs_only() -> None:
    assert grade_value(INR, "1.1", "", baseline="1.0").grade == 0
    assert grade_value(INR, "1.1", "", baseline="0.4", anticoagulated=False).grade == 0
    assert grade_value(INR, "1.3", "", baseline="1.0").grade == 1
    assert grade_value(INR, "2.6", "", baseline="1.0").grade == 3


def test_anticoagulated_grades_against_baseline_only() -> None:
    # Warfarin to a target of 2-3: the fixed cut-offs would call the therapeutic range a toxicity.
    assert grade_value(INR, "2.5", "", baseline="2.2", anticoagulated=True).grade == 1
    assert grade_value(INR, "2.2", "", baseline="2.2", anticoagulated=True).grade == 0
    assert grade_value(INR, "4.0", "", baseline="2.2", anticoagulated=True).grade == 2
    assert grade_value(INR, "6.0", "", baseline="2.2", anticoagulated=True).grade == 3


def test_anticoagulated_without_baseline_is_not_gradable() -> None:
    result = grade_value(INR, "2.5", "", anticoagulated=True)
    assert result.grade is None
    assert "baseline" in result.reason


def test_reason_says_why_baseline_was_not_used() -> None:
    result = grade_value(INR, "1.1", "", baseline="1.0")
    assert "anticoagulation" in result.reason


def test_grade_test_passes_the_flag() -> None:
    assert grade_test("INR", "1.1", "", baseline="1.0", anticoagulated=True)[0].grade == 1
