"""Unit spellings and conversions: exact within a kind, molar-mass factors across kinds."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.safety.ctcae import grade_value
from services.safety.ctcae.units import CREATININE, HEMOGLOBIN, Kind, convert, parse_unit

COUNT_SPELLINGS = [
    "10^9/L",
    "10*9/L",
    "10E9/L",
    "x10^9/L",
    "10^9/l",
    "10^3/uL",
    "10^3/µL",
    "K/uL",
    "THOU/uL",
    "GI/L",
    "/nL",
    "x10E9/L",
    "109/L",
]


@pytest.mark.parametrize("unit", COUNT_SPELLINGS)
def test_count_spellings_are_10_9_per_litre(unit: str) -> None:
    assert parse_unit(unit) is not None
    assert grade_value("Neutrophil count decreased", "0.9", unit).value_si == Decimal("0.9")


@pytest.mark.parametrize("unit", ["cells/uL", "cells/mm3", "/mm3", "/uL", "1/uL", "cells/µL", "#/uL", "10^6/L"])
def test_per_microlitre_spellings(unit: str) -> None:
    result = grade_value("Neutrophil count decreased", "900", unit)
    assert result.value_si == Decimal("0.9")
    assert result.grade == 3


@pytest.mark.parametrize("unit", ["umol/L", "µmol/L", "μmol/L", "mcmol/L", "UMOL/L", " umol / L "])
def test_micromolar_spellings(unit: str) -> None:
    spec = parse_unit(unit)
    assert spec is not None and spec.kind is Kind.MOLAR and spec.factor == Decimal("0.001")


def test_enzyme_units() -> None:
    assert grade_value("Alanine aminotransferase increased", "2", "ukat/L", uln="0.67").value_si == 120
    assert grade_value("Alanine aminotransferase increased", "121", "IU/L", uln="40").grade == 2


def test_conventional_units_convert_to_si() -> None:
    assert grade_value("Creatinine increased", "1.0", "mg/dL", uln="1.2").value_si == Decimal("88.420")
    assert grade_value("Blood bilirubin increased", "1", "mg/dL", uln="1.2").value_si == Decimal("17.104")
    assert grade_value("Anemia", "10", "g/dL", lln="12").value_si == 100
    assert grade_value("Anemia", "5", "mmol/L", lln="7.4").value_si == Decimal("80.570")
    assert grade_value("Hypokalemia", "3.0", "mEq/L", lln="3.5").value_si == Decimal("3.0")
    assert grade_value("Hypocalcemia", "4", "mEq/L", lln="2.1").value_si == Decimal("2.0")


def test_limits_convert_with_the_value() -> None:
    # 1.9 mg/dL creatinine against ULN 1.2 mg/dL: > 1.5 x ULN whatever unit it is compared in.
    assert grade_value("Creatinine increased", "1.9", "mg/dL", uln="1.2").grade == 2
    assert grade_value("Creatinine increased", "1.8", "mg/dL", uln="1.2").grade == 1


def test_conventional_cutoffs_are_used_as_written() -> None:
    # 300 mg/dL cholesterol converts to 7.758 mmol/L, above the 7.75 cut-off; CTCAE's own mg/dL
    # pair puts 300 in grade 1.
    assert grade_value("Cholesterol high", "300", "mg/dL", uln="200").grade == 1
    assert grade_value("Hypomagnesemia", "1.2", "mg/dL", lln="1.7").grade == 1


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100000"), places=3))
def test_exact_round_trip_within_kind(value: Decimal) -> None:
    per_ul = parse_unit("cells/uL")
    per_nl = parse_unit("10^9/L")
    assert per_ul is not None and per_nl is not None
    assert value * per_nl.factor / per_ul.factor * per_ul.factor == value * per_nl.factor


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("50"), places=2))
def test_round_trip_across_kinds(value: Decimal) -> None:
    si = convert(value, "mg/dL", CREATININE)
    assert si is not None
    back = si / Decimal("88.42")
    assert back == value
    g_per_l = convert(value, "mmol/L", HEMOGLOBIN)
    assert g_per_l is not None and g_per_l / Decimal("16.114") == value


def test_convert_refuses_foreign_units() -> None:
    assert convert(Decimal(1), "U/L", CREATININE) is None
    assert convert(Decimal(1), "furlongs", CREATININE) is None
