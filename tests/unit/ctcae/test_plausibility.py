"""Plausibility: a value no human body can have in its stated unit is not graded as given; it is flagged as
implausible, naming the unit that was likely meant."""

from __future__ import annotations

import pytest

from services.safety.ctcae import grade_test, grade_value, worst_grade


def test_haemoglobin_70_g_per_dl_is_not_polycythaemia() -> None:
    result = worst_grade(grade_test("HGB", "70", "g/dL", lln="12", uln="16"))
    assert result is not None
    assert result.grade is None
    assert "implausible" in result.reason
    assert result.finding is not None and result.finding.code == "implausible_value"
    assert "g/L" in result.finding.detail  # the unit that was likely meant


def test_neutrophils_400_per_nanolitre_is_likely_per_microlitre() -> None:
    result = grade_value("Neutrophil count decreased", "400", "10^9/L", lln="1.8")
    assert result.grade is None
    assert result.finding is not None and result.finding.code == "implausible_value"
    assert "/uL" in result.finding.detail
    assert "grade 4" in result.finding.detail  # what it would be if /uL was meant: the officer must know


def test_platelets_sent_per_microlitre_but_labelled_per_nanolitre() -> None:
    result = grade_value("Platelet count decreased", "45000", "10^9/L", lln="150")
    assert result.grade is None and result.finding is not None
    assert "/uL" in result.finding.detail


@pytest.mark.parametrize(
    ("term", "value", "unit", "likely"),
    [
        ("Anemia", "7", "g/L", "g/dL"),
        ("Creatinine increased", "88", "mg/dL", "umol/L"),
        ("Creatinine increased", "1.1", "umol/L", "mg/dL"),
        ("Hypoalbuminemia", "35", "g/dL", "g/L"),
        ("Hypocalcemia", "9.5", "mmol/L", "mg/dL"),
        ("Blood bilirubin increased", "200", "mg/dL", "umol/L"),
    ],
)
def test_unit_slips_name_the_likely_unit(term: str, value: str, unit: str, likely: str) -> None:
    result = grade_value(term, value, unit)
    assert result.grade is None
    assert result.finding is not None and result.finding.code == "implausible_value"
    assert f"likely {likely}" in result.finding.detail


def test_no_plausible_unit_says_so() -> None:
    result = grade_value("Acidosis", "73", "", lln="7.35")
    assert result.grade is None
    assert result.finding is not None and "no unit" in result.finding.detail


def test_implausible_limits_are_flagged_too() -> None:
    # LLN 12 written for g/dL on a g/L result: comparing 95 g/L with it would call the value normal.
    result = grade_value("Anemia", "95", "g/L", lln="12")
    assert result.grade is None
    assert result.finding is not None and "LLN" in result.finding.detail


@pytest.mark.parametrize(
    ("term", "value", "unit", "lln", "uln", "grade"),
    [
        ("Anemia", "4.5", "g/dL", "12", None, 3),  # severe but real
        ("Anemia", "2.8", "mmol/L", "7.4", None, 3),  # Dutch haemoglobin in mmol/L
        ("Neutrophil count decreased", "0", "10^9/L", "1.8", None, 4),
        ("Platelet count decreased", "1", "10^9/L", "150", None, 4),
        ("Platelet count decreased", "3000", "/uL", "150000", None, 4),
        ("Leukocytosis", "450", "10^9/L", None, "11", 3),  # hyperleukocytosis in leukaemia
        ("Creatinine increased", "15", "mg/dL", None, "1.2", 4),
        ("Creatinine increased", "1400", "umol/L", None, "110", 4),
        ("Hyperkalemia", "8.9", "mmol/L", None, "5.1", 4),
        ("Hypoglycemia", "25", "mg/dL", "70", None, 4),
    ],
)
def test_extreme_but_real_values_are_graded(
    term: str, value: str, unit: str, lln: str | None, uln: str | None, grade: int
) -> None:
    result = grade_value(term, value, unit, lln=lln, uln=uln)
    assert result.finding is None
    assert result.grade == grade


def test_a_population_bound_catches_a_slip_the_human_bound_cannot() -> None:
    # ANC "250" labelled 10^9/L: possible in chronic myeloid leukaemia, impossible in subjects with prolonged
    # cytopenia after CAR-T, where it is 250/uL: grade 4 neutropenia, not grade 0.
    assert grade_value("Neutrophil count decreased", "250", "10^9/L", lln="1.8").grade == 0
    bounded = grade_value(
        "Neutrophil count decreased", "250", "10^9/L", lln="1.8", population_max={"Neutrophil count decreased": 50}
    )
    assert bounded.grade is None
    assert bounded.finding is not None and bounded.finding.code == "implausible_value"
    assert "likely /uL" in bounded.finding.detail and "as /uL: grade 4" in bounded.finding.detail
    assert "this trial's population" in bounded.finding.detail


def test_population_bound_for_another_term_changes_nothing() -> None:
    result = grade_value("Neutrophil count decreased", "0.4", "10^9/L", population_max={"Anemia": 200})
    assert result.grade == 4


@pytest.mark.parametrize(
    ("term", "value", "unit", "uln", "likely"),
    [
        ("Blood bilirubin increased", "17", "umol/L", "1.2", "mg/dL"),  # a mg/dL ULN on a umol/L result
        ("Creatinine increased", "88", "umol/L", "1.2", "mg/dL"),
        ("Alanine aminotransferase increased", "40", "U/L", "0.6", "ukat/L"),
        ("Hyperuricemia", "400", "umol/L", "7.0", "mg/dL"),
    ],
)
def test_a_uln_in_another_unit_is_not_a_grade_4(term: str, value: str, unit: str, uln: str, likely: str) -> None:
    # 17 umol/L bilirubin against "ULN 1.2" would be 14 x ULN: grade 4 for a normal result.
    result = grade_value(term, value, unit, uln=uln)
    assert result.grade is None
    assert result.finding is not None and result.finding.code == "implausible_value"
    assert "ULN" in result.finding.detail and f"likely {likely}" in result.finding.detail


@pytest.mark.parametrize(
    ("term", "value", "unit", "uln"),
    [
        ("Blood bilirubin increased", "2", "umol/L", "21"),
        ("Blood bilirubin increased", "0.3", "mg/dL", "1.2"),
        ("Alanine aminotransferase increased", "0.5", "ukat/L", "0.6"),
        ("Alkaline phosphatase increased", "300", "U/L", "420"),  # a child's ULN
        ("Creatinine increased", "0.4", "mg/dL", "0.5"),
    ],
)
def test_real_reference_limits_pass(term: str, value: str, unit: str, uln: str) -> None:
    assert grade_value(term, value, unit, uln=uln).finding is None
