"""What a human body can show, per analyte: a value outside it was written in another unit than the one
given (haemoglobin 70 "g/dL" is 70 g/L; neutrophils 400 "10^9/L" are 400/uL), and grading it as given
would page for a toxicity nobody has or hide one that is there.

Bounds are in the analyte's SI unit and deliberately wide: beyond the most extreme values reported in
people who were alive to have the sample drawn, so a real value (a leukaemic white count of 500 x10^9/L,
a creatinine of 20 mg/dL, a haemoglobin of 3 g/dL) is always graded. Counts have no lower bound: this
trial's subjects have counts near zero. Analytes where a unit slip lands inside the real range (enzymes,
INR, sodium in mEq/L or mmol/L) have no entry: nothing here could tell.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.safety.ctcae.criteria import fold


@dataclass(frozen=True, slots=True)
class Plausible:
    """Inclusive bounds in the analyte's SI unit (None: no bound) and the units senders mix up with it.

    `uln`: where a lab's upper reference limit can sit (narrower than the values: a ULN is a healthy
    person's value). A ULN written for another unit (bilirubin "1.2" on a umol/L result) would otherwise turn
    a normal result into 14 x ULN, grade 4.
    """

    low: Decimal | None
    high: Decimal | None
    alternatives: tuple[str, ...]
    uln: tuple[Decimal, Decimal] | None = None

    def uln_holds(self, uln_si: Decimal) -> bool:
        return self.uln is None or self.uln[0] <= uln_si <= self.uln[1]

    def holds(self, value_si: Decimal) -> bool:
        return (self.low is None or value_si >= self.low) and (self.high is None or value_si <= self.high)

    def describe(self, unit_si: str) -> str:
        if self.low is None:
            return f"at most {self.high} {unit_si}"
        if self.high is None:
            return f"at least {self.low} {unit_si}"
        return f"{self.low} to {self.high} {unit_si}"


def _bounds(low: str | None, high: str | None, *alternatives: str, uln: tuple[str, str] | None = None) -> Plausible:
    return Plausible(
        None if low is None else Decimal(low),
        None if high is None else Decimal(high),
        alternatives,
        None if uln is None else (Decimal(uln[0]), Decimal(uln[1])),
    )


ENZYME_UNITS = ("U/L", "ukat/L")


PER_MICROLITRE = ("/uL",)


@functools.cache
def _table() -> Mapping[str, Plausible]:
    haemoglobin = _bounds("15", "250", "g/L", "g/dL", "mmol/L")  # g/L
    calcium = _bounds("0.5", "6", "mmol/L", "mg/dL")  # mmol/L
    ionized = _bounds("0.2", "4", "mmol/L", "mg/dL")
    magnesium = _bounds("0.05", "10", "mmol/L", "mg/dL")
    potassium = _bounds("1", "15")
    sodium = _bounds("80", "220")
    glucose = _bounds(None, "170", "mmol/L", "mg/dL")
    phosphate = _bounds(None, "10", "mmol/L", "mg/dL")
    ph = _bounds("6.0", "8.0")
    lymphocytes = _bounds(None, "1000", *PER_MICROLITRE)
    white_cells = _bounds(None, "1500", *PER_MICROLITRE)
    rows: dict[str, Plausible] = {
        "Anemia": haemoglobin,
        "Hemoglobin increased": haemoglobin,
        "Neutrophil count decreased": _bounds(None, "300", *PER_MICROLITRE),
        "Platelet count decreased": _bounds(None, "5000", *PER_MICROLITRE),
        "White blood cell decreased": white_cells,
        "Leukocytosis": white_cells,
        "Lymphocyte count decreased": lymphocytes,
        "Lymphocyte count increased": lymphocytes,
        "CD4 lymphocytes decreased": _bounds(None, "20", *PER_MICROLITRE),
        "Creatinine increased": _bounds("5", "3000", "umol/L", "mg/dL", uln=("30", "300")),  # umol/L
        "Blood bilirubin increased": _bounds(None, "1800", "umol/L", "mg/dL", uln=("5", "60")),  # umol/L
        "Hyperuricemia": _bounds(None, "3000", "umol/L", "mg/dL", uln=("150", "800")),  # umol/L
        # Enzymes (U/L): any activity can be real; only the ULN tells a unit slip.
        "Alanine aminotransferase increased": _bounds(None, None, *ENZYME_UNITS, uln=("10", "200")),
        "Aspartate aminotransferase increased": _bounds(None, None, *ENZYME_UNITS, uln=("10", "200")),
        "Alkaline phosphatase increased": _bounds(None, None, *ENZYME_UNITS, uln=("30", "1000")),
        "GGT increased": _bounds(None, None, *ENZYME_UNITS, uln=("10", "300")),
        "Blood lactate dehydrogenase increased": _bounds(None, None, *ENZYME_UNITS, uln=("100", "1500")),
        "CPK increased": _bounds(None, None, *ENZYME_UNITS, uln=("50", "2000")),
        "Lipase increased": _bounds(None, None, *ENZYME_UNITS, uln=("10", "1000")),
        "Serum amylase increased": _bounds(None, None, *ENZYME_UNITS, uln=("30", "600")),
        "Hypoalbuminemia": _bounds("5", "80", "g/L", "g/dL"),  # g/L
        "Fibrinogen decreased": _bounds(None, "20", "g/L", "mg/dL"),  # g/L
        "Cholesterol high": _bounds(None, "60", "mmol/L", "mg/dL"),
        "Hypertriglyceridemia": _bounds(None, "150", "mmol/L", "mg/dL"),
        "Hypocalcemia": calcium,
        "Hypercalcemia": calcium,
        "Hypocalcemia (ionized)": ionized,
        "Hypercalcemia (ionized)": ionized,
        "Hypomagnesemia": magnesium,
        "Hypermagnesemia": magnesium,
        "Hypokalemia": potassium,
        "Hyperkalemia": potassium,
        "Hyponatremia": sodium,
        "Hypernatremia": sodium,
        "Hypoglycemia": glucose,
        "Hyperglycemia": glucose,
        "Hypophosphatemia": phosphate,
        "Hyperphosphatemia": phosphate,
        "Acidosis": ph,
        "Alkalosis": ph,
    }
    return {fold(term): bounds for term, bounds in rows.items()}


def plausible_range(term: str) -> Plausible | None:
    """The bounds for a CTCAE term's analyte, or None where no bound could tell a unit slip from a value."""
    return _table().get(fold(term))
