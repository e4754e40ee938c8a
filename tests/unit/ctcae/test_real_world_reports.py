"""Lab reports as they arrive from real sites, read by the trial's safety physician: SI and conventional units,
decimal commas and thousands separators, censored values, missing ranges, and a population that enters at
grade 3-4 cytopenia."""

from __future__ import annotations

import pytest

from services.safety.ctcae import grade_test, grade_value, worst_grade

NEUT, PLAT, CREAT = "Neutrophil count decreased", "Platelet count decreased", "Creatinine increased"


@pytest.mark.parametrize(
    ("term", "value", "unit", "lln", "grade"),
    [
        (NEUT, "0,45", "10^9/L", "1,8", 4),  # European decimal comma (LLN arrives parsed; here as text too)
        (NEUT, "<0,1", "G/L", None, 4),  # French report: censored, decimal comma, giga per litre
        ("Anemia", "7,5", "g/dL", "12", 3),
        ("Anemia", "4,3", "mmol/L", "7,4", 3),  # Dutch haemoglobin in mmol/L
        (PLAT, "45,000", "/uL", "150000", 3),  # US thousands separator on a per-uL count
        (PLAT, "150,000", "cells/uL", "150000", 0),
        (PLAT, "<10,000", "/mm3", None, 4),
        (NEUT, "1,500", "10^9/L", "1.8", 1),  # 1500 x10^9/L is no human count: the comma is decimal
        (CREAT, "1,500", "umol/L", None, None),  # 1.5 umol/L is impossible: 1500 umol/L, but no ULN: not gradable
    ],
)
def test_decimal_commas_and_thousands_separators(
    term: str, value: str, unit: str, lln: str | None, grade: int | None
) -> None:
    lln_text = None if lln is None else lln.replace(",", ".")
    assert grade_value(term, value, unit, lln=lln_text).grade == grade


def test_a_truly_ambiguous_comma_is_a_finding_graded_at_its_floor() -> None:
    # ALT "1,200" U/L: 1.2 or 1200 (30 x ULN). No rule can tell; a grade 4 must not hide behind a comma.
    result = grade_value("Alanine aminotransferase increased", "1,200", "U/L", uln="40")
    assert result.grade is None  # one reading is grade 0: nothing every reading allows
    assert result.finding is not None and result.finding.code == "ambiguous_value"
    assert "as 1200: grade 4" in result.finding.detail


@pytest.mark.parametrize(
    ("test", "value", "unit", "lln", "uln", "grade"),
    [
        ("NEUT", "450", "cells/µL", "1500", "7500", 4),  # US absolute counts per microlitre, with the range
        ("ANC", "0.45", "K/uL", "1.8", "7.5", 4),
        ("WBC", "0.8", "x10³/µL", "4.0", "11.0", 4),
        ("PLAT", "8", "10*3/uL", "150", "400", 4),  # UCUM from a FHIR Observation
        ("HGB", "72", "g/L", "120", "160", 3),
        ("HGB", "4.4", "mmol/L", "7.4", "9.9", 3),
        ("CREAT", "3.7", "mg/dL", "0.6", "1.2", 3),  # exactly 3.0 x ULN (3.6) would be grade 2
        ("CREAT", "320", "µmol/L", "53", "106", 3),
        ("K", "6.8", "mEq/L", "3.5", "5.1", 3),
        ("BILI", "3.5", "mg/dL", "0.1", "1.2", 2),
        ("BILI", "60", "umol/L", "3", "21", 2),
        ("CA", "6.4", "mg/dL", "8.5", "10.5", 3),  # < 7.0 mg/dL corrected calcium: grade 3
        ("GLUC", "38", "mg/dL", "70", "99", 3),
    ],
)
def test_si_and_conventional_reports_agree_with_ctcae(
    test: str, value: str, unit: str, lln: str, uln: str, grade: int
) -> None:
    chosen = worst_grade(grade_test(test, value, unit, lln=lln, uln=uln))
    assert chosen is not None and chosen.grade == grade, chosen


def test_population_entering_at_grade_4_keeps_exact_grades_at_the_bottom() -> None:
    # Nothing is worse than grade 4: a censored "<0.1" is exactly 4, never a floor; so is ANC 0.
    for value in ("<0.1", "0", "0.0", "<0.5", "<=0.49"):
        result = grade_value(NEUT, value, "10^9/L", lln="1.8")
        assert (result.grade, result.floor) == (4, False), value


def test_missing_range_on_a_cytopenia_still_grades_from_absolute_cut_offs() -> None:
    assert grade_value(PLAT, "18", "10^9/L").grade == 4
    assert grade_value(NEUT, "0.7", "10^9/L").grade == 3
    # 1.6 x10^9/L without LLN: grade 0 or 1 - unknown, not normal
    assert grade_value(NEUT, "1.6", "10^9/L").grade is None


def test_aki_on_conventional_and_si_units_pages_the_same() -> None:
    conventional = grade_value(CREAT, "3.2", "mg/dL", baseline="0.8")
    si = grade_value(CREAT, "283", "umol/L", baseline="71")
    assert (conventional.grade, conventional.floor) == (si.grade, si.floor) == (3, True)


def test_percentages_and_free_text_never_pass_as_counts() -> None:
    assert grade_value(NEUT, "12", "%", lln="40").grade is None
    assert grade_value(NEUT, "haemolysed", "10^9/L").grade is None
    assert grade_value(NEUT, "NEG", "10^9/L").grade is None


def test_baseline_in_another_unit_is_converted_not_dropped() -> None:
    # The site moved from its local lab (umol/L) to the central lab (mg/dL) after baseline.
    result = grade_value(CREAT, "3.2", "mg/dL", baseline="71", baseline_unit="umol/L")
    assert (result.grade, result.floor) == (3, True)
    assert grade_value("INR increased", "2.5", "", baseline="1.0", baseline_unit="INR", anticoagulated=True).grade == 2


def test_baseline_in_a_unit_that_does_not_convert_is_said() -> None:
    result = grade_value(CREAT, "3.2", "mg/dL", baseline="71", baseline_unit="furlongs")
    assert result.grade is None
    assert "baseline" in result.reason and "furlongs" in result.reason


@pytest.mark.parametrize("value", ["0.45 L", "0.45L", "0.45 LL", "0.45*", "0.45 (L)", "0.45!"])
def test_abnormal_flags_printed_after_the_number_are_not_part_of_it(value: str) -> None:
    result = grade_value(NEUT, value, "10^9/L", lln="1.8")
    assert result.grade == 4, result.reason


def test_a_letter_that_is_not_a_flag_is_not_stripped() -> None:
    assert grade_value(NEUT, "0.45 G", "10^9/L", lln="1.8").grade is None
