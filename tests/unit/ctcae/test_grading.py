"""Grading behaviour a safety officer would notice: exact decimals, baselines, missing limits, censoring."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.safety.ctcae import Grade, grade_test, grade_value, worst_grade

BILI = "Blood bilirubin increased"
ALT = "Alanine aminotransferase increased"


def test_bilirubin_32_1_with_uln_21_4_is_grade_1_not_2() -> None:
    # 1.5 x 21.4 is 32.099999999999994 in binary floating point, which would make 32.1 grade 2.
    for value in ("32.1", Decimal("32.1"), 32.1):
        assert grade_value(BILI, value, "umol/L", uln="21.4").grade == 1
    assert grade_value(BILI, "32.11", "umol/L", uln=21.4).grade == 2


def test_float_goes_through_its_decimal_literal() -> None:
    result = grade_value("Neutrophil count decreased", 0.1 + 0.2, "10^9/L", lln="1.5")
    assert result.value_si == Decimal("0.30000000000000004")
    assert result.grade == 4


@pytest.mark.parametrize("value", ["abc", "1,5,0", "NaN", "inf", "-1", True])
def test_unreadable_value_gives_reason_not_zero(value: object) -> None:
    result = grade_value("Neutrophil count decreased", value, "10^9/L", lln="1.5")  # type: ignore[arg-type]
    assert result.grade is None
    assert result.reason


def test_missing_value() -> None:
    assert grade_value("Anemia", "", "g/L", lln="120").reason == "no value"


def test_absolute_cutoffs_apply_without_lln() -> None:
    assert grade_value("Neutrophil count decreased", "0.9", "10^9/L").grade == 3
    assert grade_value("Neutrophil count decreased", "1.45", "10^9/L", lln="1.4").grade == 2
    missing = grade_value("Neutrophil count decreased", "2.0", "10^9/L")
    assert missing.grade is None
    assert "LLN" in missing.reason


def test_trial_eligibility_cutoffs_sit_on_grade_boundaries() -> None:
    assert grade_value("Neutrophil count decreased", "1.0", "10^9/L").grade == 2
    assert grade_value("Platelet count decreased", "30", "10^9/L").grade == 3
    assert grade_value("Anemia", "70", "g/L").grade == 3


def test_missing_uln_for_relative_term() -> None:
    result = grade_value(ALT, "500", "U/L")
    assert result.grade is None
    assert "ULN" in result.reason


class TestLiverBaseline:
    def test_abnormal_baseline_alt_inclusive_1_5x(self) -> None:
        kw = {"uln": "40", "baseline": "100", "baseline_abnormal": True}
        assert grade_value(ALT, "149", "U/L", **kw).grade == 0  # type: ignore[arg-type]
        assert grade_value(ALT, "150", "U/L", **kw).grade == 1  # type: ignore[arg-type]
        assert grade_value(ALT, "300", "U/L", **kw).grade == 1  # type: ignore[arg-type]
        assert grade_value(ALT, "301", "U/L", **kw).grade == 2  # type: ignore[arg-type]
        assert grade_value(ALT, "501", "U/L", **kw).grade == 3  # type: ignore[arg-type]
        assert grade_value(ALT, "2001", "U/L", **kw).grade == 4  # type: ignore[arg-type]

    def test_abnormal_baseline_alp_and_ggt_inclusive_2x(self) -> None:
        for term in ("Alkaline phosphatase increased", "GGT increased"):
            assert grade_value(term, "199", "U/L", uln="60", baseline="100", baseline_abnormal=True).grade == 0
            assert grade_value(term, "200", "U/L", uln="60", baseline="100", baseline_abnormal=True).grade == 1
            assert grade_value(term, "251", "U/L", uln="60", baseline="100", baseline_abnormal=True).grade == 2

    def test_abnormal_baseline_bilirubin_strict(self) -> None:
        kw = {"uln": "20", "baseline": "30", "baseline_abnormal": True}
        assert grade_value(BILI, "30", "umol/L", **kw).grade == 0  # type: ignore[arg-type]
        assert grade_value(BILI, "31", "umol/L", **kw).grade == 1  # type: ignore[arg-type]
        assert grade_value(BILI, "45", "umol/L", **kw).grade == 1  # type: ignore[arg-type]
        assert grade_value(BILI, "46", "umol/L", **kw).grade == 2  # type: ignore[arg-type]
        assert grade_value(BILI, "301", "umol/L", **kw).grade == 4  # type: ignore[arg-type]

    def test_baseline_flag_derived_from_baseline_above_uln(self) -> None:
        assert grade_value(ALT, "100", "U/L", uln="40", baseline="80").grade == 0
        assert grade_value(ALT, "100", "U/L", uln="40", baseline="30").grade == 1

    def test_normal_flag_wins_over_values(self) -> None:
        assert grade_value(ALT, "100", "U/L", uln="40", baseline="80", baseline_abnormal=False).grade == 1

    def test_abnormal_flag_without_baseline_is_not_gradable(self) -> None:
        result = grade_value(ALT, "100", "U/L", uln="40", baseline_abnormal=True)
        assert result.grade is None
        assert "baseline" in result.reason


def test_creatinine_uses_baseline_multiples() -> None:
    assert grade_value("Creatinine increased", "160", "umol/L", uln="110", baseline="100").grade == 2
    assert grade_value("Creatinine increased", "301", "umol/L", uln="110", baseline="100").grade == 3
    assert grade_value("Creatinine increased", "661", "umol/L", uln="110", baseline="100").grade == 4
    no_uln = grade_value("Creatinine increased", "301", "umol/L", baseline="100")
    assert (no_uln.grade, no_uln.floor) == (3, True)  # a floor: only a ULN could make it grade 4
    assert no_uln.reason.startswith("at least grade 3")


def test_inr_baseline_and_fixed_cutoffs() -> None:
    assert grade_value("INR increased", "1.1", "", baseline="1.0", anticoagulated=True).grade == 1
    assert grade_value("INR increased", "1.6", "ratio", baseline="1.0").grade == 2
    assert grade_value("INR increased", "1.1", "", baseline="0.4", anticoagulated=True).grade == 3
    assert grade_value("INR increased", "1.1", "").grade == 0
    assert grade_value("INR increased", "1.3", "", uln="1.1").grade == 1  # ULN plays no part


def test_fibrinogen_abnormal_baseline_uses_percent_decrease() -> None:
    kw = {"lln": "2", "baseline": "1.6", "baseline_abnormal": True}
    assert grade_value("Fibrinogen decreased", "1.6", "g/L", **kw).grade == 0  # type: ignore[arg-type]
    assert grade_value("Fibrinogen decreased", "1.5", "g/L", **kw).grade == 1  # type: ignore[arg-type]
    assert grade_value("Fibrinogen decreased", "1.2", "g/L", **kw).grade == 2  # type: ignore[arg-type]
    assert grade_value("Fibrinogen decreased", "0.8", "g/L", **kw).grade == 3  # type: ignore[arg-type]
    assert grade_value("Fibrinogen decreased", "0.49", "g/L", **kw).grade == 4  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("term", "value", "unit", "lln", "uln", "top"),
    [
        ("Anemia", "40", "g/L", "120", None, 3),
        ("Hypoalbuminemia", "10", "g/L", "35", None, 3),
        ("Leukocytosis", "900", "10^9/L", None, None, 3),
        ("Hyperuricemia", "2000", "umol/L", None, "420", 1),
        ("Hypokalemia", "3.1", "mmol/L", "3.5", None, 1),
    ],
)
def test_clinical_only_grades_never_come_from_a_value(
    term: str, value: str, unit: str, lln: str | None, uln: str | None, top: int
) -> None:
    assert grade_value(term, value, unit, lln=lln, uln=uln).grade == top


def test_symptom_dependent_grade_named_in_reason() -> None:
    result = grade_value("Lipase increased", "400", "U/L", uln="60")
    assert result.grade == 3
    assert "grade 4 if signs or symptoms" in result.reason


def test_hyperglycemia_is_clinical_only() -> None:
    result = grade_value("Hyperglycemia", "15", "mmol/L", uln="6.1")
    assert (result.grade, result.floor) == (1, True)  # a laboratory finding; the rest is management
    assert "management" in result.reason


def test_percent_differential_refused() -> None:
    result = grade_value("Neutrophil count decreased", "45", "%", lln="40")
    assert result.grade is None
    assert "percentage differential" in result.reason


def test_unknown_unit_reason() -> None:
    result = grade_value("Anemia", "100", "G/cL", lln="120")
    assert result.grade is None
    assert "'G/cL'" in result.reason


def test_unit_of_wrong_quantity() -> None:
    assert grade_value("Neutrophil count decreased", "2", "mmol/L").grade is None


def test_unknown_and_non_lab_terms() -> None:
    assert "unknown term" in grade_value("Blood sugar", "1", "mmol/L").reason
    assert "investigator" in grade_value("fatigue", "1", "mmol/L").reason


def test_term_matching_ignores_case_and_spaces() -> None:
    assert grade_value("  neutrophil   COUNT decreased ", "0.4", "10^9/L").term == "Neutrophil count decreased"


def test_relative_only_term_with_no_unit() -> None:
    result = grade_value("Hyperuricemia", "500", "", uln="420")
    assert result.grade == 1
    assert result.value_si is None


class TestCensored:
    def test_unambiguous_below(self) -> None:
        assert grade_value("Neutrophil count decreased", "<0.2", "10^9/L").grade == 4
        assert grade_value("Neutrophil count decreased", "< 0.5", "10^9/L").grade == 4

    def test_ambiguous_below(self) -> None:
        result = grade_value("Neutrophil count decreased", "<0.7", "10^9/L")
        assert (result.grade, result.floor) == (3, True)
        assert "up to grade 4" in result.reason

    def test_at_or_below_includes_the_bound(self) -> None:
        assert grade_value("Neutrophil count decreased", "<=0.5", "10^9/L").floor is True
        assert grade_value("Neutrophil count decreased", "<=0.49", "10^9/L").grade == 4

    def test_above(self) -> None:
        assert grade_value(ALT, ">900", "U/L", uln="40").grade == 4
        assert grade_value(ALT, ">500", "U/L", uln="40").grade == 3  # at least 3 (> 12.5 x ULN)
        assert grade_value(ALT, ">500", "U/L", uln="40").floor is True
        assert grade_value("Lipase increased", ">500", "U/L").grade is None  # needs ULN

    def test_below_for_high_term(self) -> None:
        assert grade_value(ALT, "<5", "U/L", uln="40").grade == 0
        assert grade_value(ALT, "<50", "U/L", uln="40").grade is None


class TestGradeTest:
    def test_potassium_grades_both_directions(self) -> None:
        results = grade_test("K", "7.2", "mmol/L", lln="3.5", uln="5.1")
        assert [r.term for r in results] == ["Hypokalemia", "Hyperkalemia"]
        assert [r.grade for r in results] == [0, 4]
        chosen = worst_grade(results)
        assert chosen is not None and chosen.term == "Hyperkalemia"

    def test_loinc_and_lbtestcd_agree(self) -> None:
        assert grade_test("751-8", "0.4", "10^9/L") == grade_test("neut", "0.4", "10^9/L")

    def test_hgb_low(self) -> None:
        chosen = worst_grade(grade_test("HGB", "7.5", "g/dL", lln="12", uln="16"))
        assert chosen is not None and (chosen.term, chosen.grade) == ("Anemia", 3)

    def test_unknown_test(self) -> None:
        [result] = grade_test("XYZ", "1", "U/L")
        assert result.grade is None

    def test_glucose_normal_is_grade_0(self) -> None:
        chosen = worst_grade(grade_test("GLUC", "5.0", "mmol/L", lln="3.9", uln="6.1"))
        assert chosen is not None and chosen.grade == 0


def test_worst_grade_prefers_abnormal_then_ungradable() -> None:
    zero = Grade("A", 0, "", None, None)
    unknown = Grade("B", None, "", None, None)
    two = Grade("C", 2, "", None, None)
    assert worst_grade([zero, unknown]) is unknown
    assert worst_grade([zero, two, unknown]) is two
    assert worst_grade([]) is None


def test_grade_is_frozen() -> None:
    result = grade_value("Anemia", "70", "g/L")
    with pytest.raises(AttributeError):
        result.grade = 1  # type: ignore[misc]
