"""Lab unit parsing and conversion, in exact decimal arithmetic.

Units are grouped into kinds (mass concentration, substance concentration, cell count...). Within a kind
every unit is an exact decimal multiple of the kind's base unit, so converting never rounds; crossing kinds
(mg/dL -> mmol/L) needs the analyte's molar mass and is done by `Quantity`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Kind(StrEnum):
    """What a unit measures; each kind has one base unit (see `BASE_UNIT`)."""

    MASS = "mass"
    MOLAR = "molar"
    EQUIV = "equiv"
    COUNT = "count"
    ACTIVITY = "activity"
    TIME = "time"
    UNITLESS = "unitless"
    PERCENT = "percent"


BASE_UNIT: Mapping[Kind, str] = {
    Kind.MASS: "g/L",
    Kind.MOLAR: "mmol/L",
    Kind.EQUIV: "mEq/L",
    Kind.COUNT: "10^9/L",
    Kind.ACTIVITY: "U/L",
    Kind.TIME: "s",
    Kind.UNITLESS: "",
    Kind.PERCENT: "%",
}


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """A parsed unit: its kind and the exact multiplier to the kind's base unit."""

    kind: Kind
    factor: Decimal


def _d(text: str) -> Decimal:
    return Decimal(text)


# Canonical (lower-case, normalised) spelling -> (kind, multiplier to base). Keep multipliers exact.
_UNITS: Mapping[str, tuple[Kind, str]] = {
    # cell counts, base 10^9/L (= 10^3/uL = /nL)
    "10^9/l": (Kind.COUNT, "1"),
    "gi/l": (Kind.COUNT, "1"),
    "gpt/l": (Kind.COUNT, "1"),  # German "Gigapartikel"
    "giga/l": (Kind.COUNT, "1"),
    "/nl": (Kind.COUNT, "1"),
    "10^3/ul": (Kind.COUNT, "1"),
    "k/ul": (Kind.COUNT, "1"),
    "thou/ul": (Kind.COUNT, "1"),
    "10^2/ul": (Kind.COUNT, "0.1"),
    "/ul": (Kind.COUNT, "0.001"),
    "10^6/l": (Kind.COUNT, "0.001"),
    "10^3/ml": (Kind.COUNT, "0.001"),
    "10^12/l": (Kind.COUNT, "1000"),
    "t/l": (Kind.COUNT, "1000"),
    "tpt/l": (Kind.COUNT, "1000"),
    "/pl": (Kind.COUNT, "1000"),
    "10^6/ul": (Kind.COUNT, "1000"),
    "m/ul": (Kind.COUNT, "1000"),
    "mil/ul": (Kind.COUNT, "1000"),
    "/l": (Kind.COUNT, "0.000000001"),
    # mass concentration, base g/L
    "g/l": (Kind.MASS, "1"),
    "g/dl": (Kind.MASS, "10"),
    "gm/dl": (Kind.MASS, "10"),
    "g/100ml": (Kind.MASS, "10"),
    "mg/ml": (Kind.MASS, "1"),
    "mg/dl": (Kind.MASS, "0.01"),
    "mg/100ml": (Kind.MASS, "0.01"),
    "mg%": (Kind.MASS, "0.01"),
    "mg/l": (Kind.MASS, "0.001"),
    "ug/ml": (Kind.MASS, "0.001"),
    "ug/dl": (Kind.MASS, "0.00001"),
    "ug/l": (Kind.MASS, "0.000001"),
    "ng/ml": (Kind.MASS, "0.000001"),
    # substance concentration, base mmol/L
    "mol/l": (Kind.MOLAR, "1000"),
    "mmol/l": (Kind.MOLAR, "1"),
    "umol/l": (Kind.MOLAR, "0.001"),
    "nmol/l": (Kind.MOLAR, "0.000001"),
    # charge concentration, base mEq/L (the analyte's valence links it to mmol/L)
    "meq/l": (Kind.EQUIV, "1"),
    "mval/l": (Kind.EQUIV, "1"),
    # catalytic activity, base U/L (1 ukat = 60 U exactly)
    "u/l": (Kind.ACTIVITY, "1"),
    "iu/l": (Kind.ACTIVITY, "1"),
    "[iu]/l": (Kind.ACTIVITY, "1"),
    "ku/l": (Kind.ACTIVITY, "1000"),
    "ui/l": (Kind.ACTIVITY, "1"),
    "units/l": (Kind.ACTIVITY, "1"),
    "mu/ml": (Kind.ACTIVITY, "1"),
    "miu/ml": (Kind.ACTIVITY, "1"),
    "u/ml": (Kind.ACTIVITY, "1000"),
    "ukat/l": (Kind.ACTIVITY, "60"),
    "nkat/l": (Kind.ACTIVITY, "0.06"),
    # time (aPTT)
    "s": (Kind.TIME, "1"),
    "sec": (Kind.TIME, "1"),
    "secs": (Kind.TIME, "1"),
    "second": (Kind.TIME, "1"),
    "seconds": (Kind.TIME, "1"),
    # ratios and pH
    "": (Kind.UNITLESS, "1"),
    "1": (Kind.UNITLESS, "1"),
    "ratio": (Kind.UNITLESS, "1"),
    "{ratio}": (Kind.UNITLESS, "1"),
    "inr": (Kind.UNITLESS, "1"),
    "ph": (Kind.UNITLESS, "1"),
    "[ph]": (Kind.UNITLESS, "1"),
    "phunits": (Kind.UNITLESS, "1"),
    # differentials: never an absolute count
    "%": (Kind.PERCENT, "1"),
    "percent": (Kind.PERCENT, "1"),
    "pct": (Kind.PERCENT, "1"),
    "/100wbc": (Kind.PERCENT, "1"),
    "%ofwbc": (Kind.PERCENT, "1"),
}

_POWER = re.compile(r"^(?:x)?10(?:\^|\*\*|\*|e)(\d+)")
_PLAIN_POWER = re.compile(r"^10(\d)(?=/)")  # "109/L" as typed without the caret
_MICRO = re.compile(r"(^|/)mc(?=[a-z])")
_ANNOTATION = re.compile(r"\{[^{}]*\}")  # UCUM annotations ("{cells}/uL") carry no unit
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
_SUPERSCRIPT_RUN = re.compile("([⁰¹²³⁴⁵⁶⁷⁸⁹]+)")


@functools.lru_cache(maxsize=1024)
def normalise_unit(unit: str) -> str:
    """Fold the spellings labs use for one unit into one: case, µ/u/mc, 10E9/x10^9/10*9, superscript powers
    with a multiplication sign, mm3/uL, cells/, UCUM annotations ("{cells}"). Cached: a trial's results come in
    a handful of unit spellings, and every result and baseline is normalised."""
    s = _SUPERSCRIPT_RUN.sub(lambda m: "^" + m.group(1).translate(_SUPERSCRIPT), unit)
    s = s.strip().lower().replace("µ", "u").replace("μ", "u").replace("\u00d7", "x")
    s = "".join(s.split())
    s = _ANNOTATION.sub("", s)
    s = _POWER.sub(r"10^\1", s)
    s = _PLAIN_POWER.sub(r"10^\1", s)
    s = _MICRO.sub(r"\1u", s)
    s = s.replace("litre", "l").replace("liter", "l")
    for cubic in ("mm^3", "mm3", "cumm", "cmm"):
        s = s.replace(cubic, "ul")
    for cells in ("cells", "cell"):
        s = s.replace(cells, "")
    for prefix in ("#/", "1/"):
        if s.startswith(prefix):
            s = "/" + s[len(prefix) :]
    s = s.replace("x10^", "10^")
    return s


@functools.cache
def parse_unit(unit: str) -> UnitSpec | None:
    """Kind and exact base multiplier of a unit string, or None when the unit is not one we know."""
    entry = _UNITS.get(normalise_unit(unit))
    if entry is None:
        return None
    kind, factor = entry
    return UnitSpec(kind, _d(factor))


_COUNT_READINGS: Mapping[str, str] = {"g/l": "1"}
"""Spellings that mean grams for a mass but giga-cells for a count ("G/L" on French and Swiss reports)."""


def parse_unit_for(unit: str, quantity: Quantity) -> UnitSpec | None:
    """`parse_unit`, reading the few spellings that mean one thing for a count and another for a mass by
    the analyte: "G/L" is grams per litre of haemoglobin and 10^9 neutrophils per litre."""
    spec = parse_unit(unit)
    if spec is not None and quantity.accepts(spec.kind):
        return spec
    if quantity.is_count:
        factor = _COUNT_READINGS.get(normalise_unit(unit))
        if factor is not None:
            return UnitSpec(Kind.COUNT, _d(factor))
    return spec


@dataclass(frozen=True, slots=True)
class Quantity:
    """An analyte's units: which kinds it can be reported in and how each maps to its SI unit.

    `to_si_kind[k]` multiplies a value in the base unit of kind k into the base unit of `si_kind`
    (1 for `si_kind` itself; a molar-mass factor across kinds). `si_scale` turns that base unit into
    the unit we report as `unit_si` (mmol/L -> umol/L is 1000).
    """

    name: str
    si_kind: Kind
    si_unit: str
    si_scale: Decimal
    to_si_kind: Mapping[Kind, Decimal]
    is_count: bool = False

    def accepts(self, kind: Kind) -> bool:
        return kind in self.to_si_kind


def _quantity(
    name: str, si_kind: Kind, si_unit: str, si_scale: str = "1", is_count: bool = False, **cross: str
) -> Quantity:
    kinds: dict[Kind, Decimal] = {si_kind: Decimal(1)}
    kinds.update({Kind(k): Decimal(v) for k, v in cross.items()})
    return Quantity(name, si_kind, si_unit, Decimal(si_scale), kinds, is_count)


# Cross-kind multipliers are per base unit: g/L -> mmol/L = 100 x the usual "mg/dL -> mmol/L" factor.
COUNT = _quantity("cell count", Kind.COUNT, "10^9/L", is_count=True)
HEMOGLOBIN = _quantity("hemoglobin", Kind.MASS, "g/L", molar="16.114")
ALBUMIN = _quantity("albumin", Kind.MASS, "g/L")
FIBRINOGEN = _quantity("fibrinogen", Kind.MASS, "g/L")
HAPTOGLOBIN = _quantity("haptoglobin", Kind.MASS, "g/L")
ENZYME = _quantity("enzyme activity", Kind.ACTIVITY, "U/L")
CLOTTING_TIME = _quantity("clotting time", Kind.TIME, "s")
RATIO = _quantity("ratio", Kind.UNITLESS, "")
PH = _quantity("pH", Kind.UNITLESS, "")
CREATININE = _quantity("creatinine", Kind.MOLAR, "umol/L", "1000", mass="8.842")
BILIRUBIN = _quantity("bilirubin", Kind.MOLAR, "umol/L", "1000", mass="1.7104")
URATE = _quantity("uric acid", Kind.MOLAR, "umol/L", "1000", mass="5.948")
GLUCOSE = _quantity("glucose", Kind.MOLAR, "mmol/L", mass="5.55")
CALCIUM = _quantity("calcium", Kind.MOLAR, "mmol/L", mass="24.95", equiv="0.5")
MAGNESIUM = _quantity("magnesium", Kind.MOLAR, "mmol/L", mass="41.14", equiv="0.5")
POTASSIUM = _quantity("potassium", Kind.MOLAR, "mmol/L", equiv="1")
SODIUM = _quantity("sodium", Kind.MOLAR, "mmol/L", equiv="1")
PHOSPHATE = _quantity("phosphate", Kind.MOLAR, "mmol/L", mass="32.29")
CHOLESTEROL = _quantity("cholesterol", Kind.MOLAR, "mmol/L", mass="2.586")
TRIGLYCERIDES = _quantity("triglycerides", Kind.MOLAR, "mmol/L", mass="1.129")


def convert(value: Decimal, unit: str, quantity: Quantity) -> Decimal | None:
    """`value` in `unit` expressed in the quantity's SI unit, or None when the unit does not fit."""
    spec = parse_unit_for(unit, quantity)
    if spec is None or not quantity.accepts(spec.kind):
        return None
    return value * spec.factor * quantity.to_si_kind[spec.kind] * quantity.si_scale
