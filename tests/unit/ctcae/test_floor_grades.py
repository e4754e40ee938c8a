"""Floor grades: where missing reference data (or a censored value) leaves several grades possible, the grade
is the lowest every reading allows, marked `floor`, and the reason says what would settle it."""

from __future__ import annotations

import io

import pytest

from services.safety.ctcae import grade_csv, grade_test, grade_value, worst_grade

CREAT = "Creatinine increased"


def test_aki_without_uln_is_at_least_grade_3() -> None:
    # 3.2 mg/dL is 4 x the 0.8 baseline: > 3.0 x baseline is grade 3; only a ULN could make it grade 4.
    result = grade_value(CREAT, "3.2", "mg/dL", baseline="0.8")
    assert (result.grade, result.floor) == (3, True)
    assert result.reason.startswith("at least grade 3")
    assert "ULN" in result.reason


def test_creatinine_doubling_without_uln_is_at_least_grade_2() -> None:
    result = grade_value(CREAT, "1.6", "mg/dL", baseline="0.8")
    assert (result.grade, result.floor) == (2, True)
    assert "at least grade 2" in result.reason


def test_creatinine_with_uln_and_baseline_is_exact() -> None:
    result = grade_value(CREAT, "3.2", "mg/dL", uln="1.2", baseline="0.8")
    assert (result.grade, result.floor) == (3, False)


def test_nothing_known_below_the_first_cut_stays_ungradable() -> None:
    # 0.9 mg/dL with baseline 0.8 and no ULN: could be 0 or 1. A floor of 0 tells nobody anything.
    result = grade_value(CREAT, "0.9", "mg/dL", baseline="0.8")
    assert result.grade is None
    assert result.floor is False
    assert "not gradable without ULN" in result.reason


@pytest.mark.parametrize(
    ("test", "value", "unit", "floor"),
    [
        ("NEUT", "<1.0", "x10^9/L", 3),
        ("NEUT", "<0.5", "10^9/L", 4),
        ("PLAT", "<50", "10^9/L", 3),
        ("PLAT", "<20", "10^9/L", 4),
        ("PLAT", "<50000", "/uL", 3),
    ],
)
def test_censored_cytopenias_are_floors(test: str, value: str, unit: str, floor: int) -> None:
    result = worst_grade(grade_test(test, value, unit))
    assert result is not None
    assert result.grade == floor
    exact = floor == 4  # nothing is worse than grade 4
    assert result.floor is not exact
    if not exact:
        assert result.reason.startswith(f"at least grade {floor}")
        assert "up to grade 4" in result.reason


def test_censored_creatinine_above_floor_needs_uln() -> None:
    result = grade_value(CREAT, ">3.0", "mg/dL", baseline="0.8")
    assert (result.grade, result.floor) == (3, True)


def test_censored_value_spanning_normal_stays_ungradable() -> None:
    result = grade_value("Neutrophil count decreased", "<2.0", "10^9/L", lln="1.8")
    assert result.grade is None
    assert "could be grade 0 to 4" in result.reason


@pytest.mark.parametrize(
    ("term", "value", "lln", "uln"),
    [
        ("Hypophosphatemia", "0.5", "0.8", None),
        ("Hyperphosphatemia", "2.1", None, "1.5"),
        ("Hyperglycemia", "15", None, "6.1"),
    ],
)
def test_clinical_only_terms_beyond_the_limit_are_a_grade_1_lab_finding(
    term: str, value: str, lln: str | None, uln: str | None
) -> None:
    result = grade_value(term, value, "mmol/L", lln=lln, uln=uln)
    assert (result.grade, result.floor) == (1, True)
    assert "at least grade 1" in result.reason
    assert "laboratory finding" in result.reason


def test_clinical_only_within_limits_is_grade_0_and_without_limit_ungradable() -> None:
    assert grade_value("Hypophosphatemia", "1.0", "mmol/L", lln="0.8").grade == 0
    missing = grade_value("Hypophosphatemia", "0.5", "mmol/L")
    assert missing.grade is None and "LLN" in missing.reason


def test_censored_phosphate_below_lln_is_a_floor() -> None:
    result = grade_value("Hypophosphatemia", "<0.3", "mmol/L", lln="0.8")
    assert (result.grade, result.floor) == (1, True)


def test_exact_grades_are_not_floors() -> None:
    assert grade_value("Neutrophil count decreased", "0.4", "10^9/L").floor is False
    assert grade_value("Anemia", "75", "g/L", lln="120").floor is False


def test_worst_grade_prefers_a_floor_over_an_ungradable_twin() -> None:
    results = grade_test("PHOS", "0.5", "mmol/L", lln="0.8", uln="1.5")
    chosen = worst_grade(results)
    assert chosen is not None and chosen.term == "Hypophosphatemia" and chosen.floor


def test_grade_csv_shows_the_floor() -> None:
    out = io.StringIO()
    grade_csv(io.StringIO("test,value,unit,lln,uln,baseline\nCREAT,3.2,mg/dL,,,0.8\n"), out)
    row = out.getvalue().splitlines()[1]
    assert ",3,at least grade 3" in row


def test_grade_csv_reads_anticoagulation() -> None:
    out = io.StringIO()
    grade_csv(io.StringIO("test,value,unit,baseline,anticoagulated\nINR,1.1,,1.0,yes\nINR,1.1,,1.0,\n"), out)
    first, second = out.getvalue().splitlines()[1:]
    assert ",1,grade 1" in first
    assert ',0,"grade 0' in second
