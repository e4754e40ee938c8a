"""Units as people write them (lab printouts, EDC free text, UCUM from FHIR): one meaning each, or a clear
reason. A unit we do not know is never guessed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.safety.ctcae import grade_value
from services.safety.ctcae.units import COUNT, HEMOGLOBIN, Kind, parse_unit, parse_unit_for

GIGA_PER_LITRE = [
    "G/L",
    "g/l",
    "Gi/L",
    "GI/L",
    "x10^9/L",
    "\u00d710⁹/L",
    "x 10⁹/L",
    "10⁹/L",
    "10*9/L",
    "10E9/L",
    "10e9/l",
    "/nL",
    "K/µL",
    "K/μL",
    "K/uL",
    "k/mcL",
    "10³/µL",
    "10^3/mm³",
    "10*3/uL",
    "{cells}/nL",
    "10^3 cells/uL",
    "Gpt/L",
    "Giga/L",
    "K/cmm",
]


@pytest.mark.parametrize("unit", GIGA_PER_LITRE)
def test_giga_per_litre_spellings(unit: str) -> None:
    spec = parse_unit_for(unit, COUNT)
    assert spec is not None and spec.kind is Kind.COUNT and spec.factor == 1
    result = grade_value("Neutrophil count decreased", "0.9", unit)
    assert (result.grade, result.value_si) == (3, Decimal("0.9"))


@pytest.mark.parametrize("unit", ["/pL", "T/L", "10^12/L", "10⁶/µL", "M/uL", "mil/uL"])
def test_tera_per_litre_spellings(unit: str) -> None:
    spec = parse_unit_for(unit, COUNT)
    assert spec is not None and spec.kind is Kind.COUNT and spec.factor == 1000


def test_g_per_litre_is_grams_for_haemoglobin_and_giga_for_counts() -> None:
    hb = parse_unit_for("G/L", HEMOGLOBIN)
    assert hb is not None and hb.kind is Kind.MASS
    assert grade_value("Anemia", "75", "G/L", lln="120").grade == 3
    assert grade_value("Platelet count decreased", "20", "G/L").grade == 4


@pytest.mark.parametrize("unit", ["[IU]/L", "U/L", "IU/L", "kU/L"])
def test_ucum_enzyme_units(unit: str) -> None:
    spec = parse_unit(unit)
    assert spec is not None and spec.kind is Kind.ACTIVITY


@pytest.mark.parametrize("unit", ["mval/L", "mEq/L", "meq/l"])
def test_equivalents(unit: str) -> None:
    spec = parse_unit(unit)
    assert spec is not None and spec.kind is Kind.EQUIV


@pytest.mark.parametrize("unit", ["gm/dL", "g/dl", "G/DL", "g/100 mL"])
def test_grams_per_decilitre(unit: str) -> None:
    spec = parse_unit(unit)
    assert spec is not None and (spec.kind, spec.factor) == (Kind.MASS, 10)


@pytest.mark.parametrize("unit", ["10^9/L", "cells", "x10^9", "mmol", "g/cL", "U/g", "10^9/dL", "µ", "mg/kg"])
def test_unknown_unit_is_a_reason_and_a_finding_never_a_guess(unit: str) -> None:
    result = grade_value("Anemia" if unit != "10^9/L" else "Hypokalemia", "3", unit, lln="120")
    assert result.grade is None
    assert repr(unit) in result.reason
    assert result.finding is not None and result.finding.code == "unknown_unit"


def test_missing_unit_on_an_absolute_count_is_a_finding() -> None:
    result = grade_value("Neutrophil count decreased", "0.9", None)
    assert result.grade is None
    assert result.finding is not None and result.finding.code == "unknown_unit"
    assert "no unit" in result.reason


def _case_variants(text: str) -> st.SearchStrategy[str]:
    return st.tuples(*[st.sampled_from(sorted({c.lower(), c.upper()})) for c in text]).map("".join)


@given(_case_variants("mmol/l"))
def test_mmol_per_litre_in_any_case(unit: str) -> None:
    spec = parse_unit(unit)
    assert spec is not None and (spec.kind, spec.factor) == (Kind.MOLAR, 1)


@given(
    prefix=st.sampled_from(["", "x", "X", "\u00d7", "x ", "\u00d7 "]),
    power=st.sampled_from(["^9", "*9", "E9", "e9", "**9", "⁹"]),
    litre=st.sampled_from(["/L", "/l", " /L", "/litre", "/liter"]),
)
def test_every_ten_to_the_nine_spelling_is_one_unit(prefix: str, power: str, litre: str) -> None:
    spec = parse_unit_for(f"{prefix}10{power}{litre}", COUNT)
    assert spec is not None and (spec.kind, spec.factor) == (Kind.COUNT, 1)


@given(
    prefix=st.sampled_from(["", "x", "\u00d7"]),
    power=st.sampled_from(["^3", "*3", "E3", "³"]),
    micro=st.sampled_from(["u", "µ", "μ", "mc", "U"]),
    volume=st.sampled_from(["L", "l"]),
)
def test_every_ten_to_the_three_per_microlitre_spelling_is_one_unit(
    prefix: str, power: str, micro: str, volume: str
) -> None:
    spec = parse_unit_for(f"{prefix}10{power}/{micro}{volume}", COUNT)
    assert spec is not None and (spec.kind, spec.factor) == (Kind.COUNT, 1)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz/^*0123456789%{} ", max_size=10))
def test_case_never_changes_a_unit_and_grading_never_raises(unit: str) -> None:
    assert parse_unit(unit) == parse_unit(unit.upper())
    result = grade_value("Neutrophil count decreased", "1", unit)
    assert result.grade is not None or result.reason  # a grade or a reason, never an exception
