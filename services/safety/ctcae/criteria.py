"""CTCAE v5.0 value rules for the lab-gradable terms, written from the NCI text.

Each term is a list of cut-offs. A cut-off says: the value is at least this grade when it lies beyond
(above for "high" terms, below for "low" terms) a threshold that is absolute, a multiple of LLN/ULN or a
multiple of baseline. The grade is the highest cut-off passed. CTCAE's ranges "<LLN - 1.5" put the
cut-off value itself in the milder grade, so cut-offs are strict unless the text says ">=" or gives an
inclusive range ("1.5 - 3.0 x baseline", "150 mg/dL - 300 mg/dL").

Absolute thresholds are kept in every unit CTCAE states them in (mg/dL and mmol/L for calcium, ...):
CTCAE's unit pairs are rounded (300 mg/dL cholesterol is not exactly 7.75 mmol/L), so a value is compared
with the numbers CTCAE wrote for its own unit where there are some, and converted only where there are not.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum, StrEnum

from services.safety.ctcae import units
from services.safety.ctcae.units import Kind, Quantity


class Direction(StrEnum):
    HIGH = "high"
    LOW = "low"


class Ref(Enum):
    ABS = "absolute"
    LLN = "LLN"
    ULN = "ULN"
    BASELINE = "baseline"


REF_SLOT = {Ref.ABS: 0, Ref.LLN: 1, Ref.ULN: 2, Ref.BASELINE: 3}


class Mode(Enum):
    """Which baseline situation a cut-off belongs to (liver tests and fibrinogen switch on it)."""

    ANY = "any"
    BASELINE_NORMAL = "baseline normal"
    BASELINE_ABNORMAL = "baseline abnormal"


@dataclass(frozen=True, slots=True)
class Cut:
    """One grade boundary.

    ABS: threshold = `amount` (in the base unit of `kind`). Relative: threshold = ref x `amount` + `offset`
    (`offset` in the base unit of `kind`). `optional` cut-offs are skipped when their reference is missing
    instead of making the grade unknown. `note` says which higher grade needs a clinical finding.
    """

    grade: int
    ref: Ref
    amount: Decimal
    label: str
    inclusive: bool = False
    kind: Kind | None = None
    offset: Decimal = Decimal(0)
    mode: Mode = Mode.ANY
    optional: bool = False
    note: str = ""
    anticoagulation: bool | None = None
    slot: int = 0  # index of the reference in (absolute, LLN, ULN, baseline): a tuple lookup, not a hash

    def __post_init__(self) -> None:
        object.__setattr__(self, "slot", REF_SLOT[self.ref])


@dataclass(frozen=True, slots=True)
class Criterion:
    """A lab-gradable term: direction, quantity, cut-offs, and the grades only a clinician can give."""

    term: str
    ctcae_term: str
    direction: Direction
    quantity: Quantity
    cuts: tuple[Cut, ...]
    baseline_switch: bool = False
    clinical_only: bool = False
    clinical_grades: str = ""
    kinds_with_absolutes: frozenset[Kind] = field(default=frozenset())


def absolute(
    grade: int,
    amount: str,
    unit: str,
    *,
    inclusive: bool = False,
    note: str = "",
    anticoagulation: bool | None = None,
) -> Cut:
    spec = units.parse_unit(unit)
    assert spec is not None, unit
    return Cut(
        grade,
        Ref.ABS,
        Decimal(amount) * spec.factor,
        f"{amount} {unit}".rstrip(),
        inclusive=inclusive,
        kind=spec.kind,
        note=note,
        anticoagulation=anticoagulation,
    )


def relative(
    grade: int,
    ref: Ref,
    multiple: str = "1",
    *,
    inclusive: bool = False,
    mode: Mode = Mode.ANY,
    optional: bool = False,
    note: str = "",
    anticoagulation: bool | None = None,
) -> Cut:
    label = ref.value if multiple == "1" else f"{multiple} x {ref.value}"
    return Cut(
        grade,
        ref,
        Decimal(multiple),
        label,
        inclusive=inclusive,
        mode=mode,
        optional=optional,
        note=note,
        anticoagulation=anticoagulation,
    )


def above_uln_by(grade: int, amount: str, unit: str) -> Cut:
    spec = units.parse_unit(unit)
    assert spec is not None, unit
    return Cut(
        grade,
        Ref.ULN,
        Decimal(1),
        f"ULN + {amount} {unit}",
        kind=spec.kind,
        offset=Decimal(amount) * spec.factor,
    )


def _term(
    term: str,
    direction: Direction,
    quantity: Quantity,
    *cuts: Cut,
    ctcae_term: str = "",
    clinical_grades: str = "",
    clinical_only: bool = False,
) -> Criterion:
    return Criterion(
        term=term,
        ctcae_term=ctcae_term or term,
        direction=direction,
        quantity=quantity,
        cuts=tuple(cuts),
        baseline_switch=any(c.mode is not Mode.ANY for c in cuts),
        clinical_only=clinical_only,
        clinical_grades=clinical_grades,
        kinds_with_absolutes=frozenset(c.kind for c in cuts if c.kind is not None),
    )


HIGH, LOW = Direction.HIGH, Direction.LOW
LLN, ULN, BASE = Ref.LLN, Ref.ULN, Ref.BASELINE
NORMAL, ABNORMAL = Mode.BASELINE_NORMAL, Mode.BASELINE_ABNORMAL


def _count_low(term: str, g2: str, g3: str, g4: str) -> Criterion:
    """Cytopenias: "<LLN - g2; <g2 - g3; <g3 - g4; <g4" in 10^9/L."""
    return _term(
        term,
        LOW,
        units.COUNT,
        relative(1, LLN),
        absolute(2, g2, "10^9/L"),
        absolute(3, g3, "10^9/L"),
        absolute(4, g4, "10^9/L"),
    )


def _liver(term: str, g2: str, g3: str, g4: str, abnormal_g1: str, abnormal_g1_inclusive: bool) -> Criterion:
    """ULN multiples with a normal baseline; the same multiples of baseline when baseline was abnormal."""
    return _term(
        term,
        HIGH,
        units.ENZYME if term != "Blood bilirubin increased" else units.BILIRUBIN,
        relative(1, ULN, mode=NORMAL),
        relative(2, ULN, g2, mode=NORMAL),
        relative(3, ULN, g3, mode=NORMAL),
        relative(4, ULN, g4, mode=NORMAL),
        relative(1, BASE, abnormal_g1, inclusive=abnormal_g1_inclusive, mode=ABNORMAL),
        relative(2, BASE, g2, mode=ABNORMAL),
        relative(3, BASE, g3, mode=ABNORMAL),
        relative(4, BASE, g4, mode=ABNORMAL),
    )


@functools.cache
def criteria() -> Mapping[str, Criterion]:
    """All value-gradable terms keyed by their folded name; built once, on first use."""
    mgdl, mmol, gl = "mg/dL", "mmol/L", "g/L"
    pancreatic_g3 = "grade 3 if signs or symptoms"
    pancreatic_g4 = "grade 4 if signs or symptoms"
    table = [
        # Blood and lymphatic system disorders
        _term(
            "Anemia",
            LOW,
            units.HEMOGLOBIN,
            relative(1, LLN),
            absolute(2, "100", gl),
            absolute(3, "80", gl),
            absolute(2, "6.2", mmol),
            absolute(3, "4.9", mmol),
            clinical_grades="grade 4 (life-threatening) and 5 are clinical",
        ),
        _term(
            "Leukocytosis",
            HIGH,
            units.COUNT,
            absolute(3, "100", "10^9/L"),
            clinical_grades="grade 4 (leucostasis) and 5 are clinical",
        ),
        # Investigations
        _term(
            "Activated partial thromboplastin time prolonged",
            HIGH,
            units.CLOTTING_TIME,
            relative(1, ULN),
            relative(2, ULN, "1.5"),
            relative(3, ULN, "2.5"),
        ),
        _liver("Alanine aminotransferase increased", "3.0", "5.0", "20.0", "1.5", True),
        _liver("Aspartate aminotransferase increased", "3.0", "5.0", "20.0", "1.5", True),
        _liver("Alkaline phosphatase increased", "2.5", "5.0", "20.0", "2.0", True),
        _liver("GGT increased", "2.5", "5.0", "20.0", "2.0", True),
        _liver("Blood bilirubin increased", "1.5", "3.0", "10.0", "1.0", False),
        _term("Blood lactate dehydrogenase increased", HIGH, units.ENZYME, relative(1, ULN)),
        _count_low("CD4 lymphocytes decreased", "0.5", "0.2", "0.05"),
        _term(
            "Cholesterol high",
            HIGH,
            units.CHOLESTEROL,
            relative(1, ULN),
            absolute(2, "7.75", mmol),
            absolute(3, "10.34", mmol),
            absolute(4, "12.92", mmol),
            absolute(2, "300", mgdl),
            absolute(3, "400", mgdl),
            absolute(4, "500", mgdl),
        ),
        _term(
            "CPK increased",
            HIGH,
            units.ENZYME,
            relative(1, ULN),
            relative(2, ULN, "2.5"),
            relative(3, ULN, "5"),
            relative(4, ULN, "10"),
        ),
        _term(
            "Creatinine increased",
            HIGH,
            units.CREATININE,
            relative(1, ULN),
            relative(2, ULN, "1.5"),
            relative(3, ULN, "3.0"),
            relative(4, ULN, "6.0"),
            relative(2, BASE, "1.5", optional=True),
            relative(3, BASE, "3.0", optional=True),
        ),
        _term(
            "Fibrinogen decreased",
            LOW,
            units.FIBRINOGEN,
            relative(1, LLN, mode=NORMAL),
            relative(2, LLN, "0.75", mode=NORMAL),
            relative(3, LLN, "0.5", mode=NORMAL),
            relative(4, LLN, "0.25", mode=NORMAL),
            # "if abnormal": <25% / 25-<50% / 50-<75% / 75% decrease from baseline
            relative(1, BASE, "1", mode=ABNORMAL),
            relative(2, BASE, "0.75", inclusive=True, mode=ABNORMAL),
            relative(3, BASE, "0.5", inclusive=True, mode=ABNORMAL),
            relative(4, BASE, "0.25", inclusive=True, mode=ABNORMAL),
            absolute(4, "50", mgdl),
        ),
        _term("Haptoglobin decreased", LOW, units.HAPTOGLOBIN, relative(1, LLN)),
        _term(
            "Hemoglobin increased",
            HIGH,
            units.HEMOGLOBIN,
            relative(1, ULN),
            above_uln_by(2, "20", gl),
            above_uln_by(3, "40", gl),
        ),
        _term(
            "INR increased",
            HIGH,
            units.RATIO,
            # ">1.2 - 1.5; >1 - 1.5 x baseline if on anticoagulation": the fixed cut-offs for everyone else,
            # the baseline multiples for subjects on anticoagulation (whose therapeutic INR of 2-3 would
            # otherwise be graded as a toxicity).
            absolute(1, "1.2", "", anticoagulation=False),
            absolute(2, "1.5", "", anticoagulation=False),
            absolute(3, "2.5", "", anticoagulation=False),
            relative(1, BASE, "1", anticoagulation=True),
            relative(2, BASE, "1.5", anticoagulation=True),
            relative(3, BASE, "2.5", anticoagulation=True),
        ),
        _term(
            "Lipase increased",
            HIGH,
            units.ENZYME,
            relative(1, ULN),
            relative(2, ULN, "1.5"),
            relative(2, ULN, "2.0", note=pancreatic_g3),
            relative(3, ULN, "5.0", note=pancreatic_g4),
        ),
        _term(
            "Serum amylase increased",
            HIGH,
            units.ENZYME,
            relative(1, ULN),
            relative(2, ULN, "1.5"),
            relative(2, ULN, "2.0", note=pancreatic_g3),
            relative(3, ULN, "5.0", note=pancreatic_g4),
        ),
        _count_low("Lymphocyte count decreased", "0.8", "0.5", "0.2"),
        _term(
            "Lymphocyte count increased",
            HIGH,
            units.COUNT,
            absolute(2, "4", "10^9/L"),
            absolute(3, "20", "10^9/L"),
        ),
        _count_low("Neutrophil count decreased", "1.5", "1.0", "0.5"),
        _count_low("Platelet count decreased", "75", "50", "25"),
        _count_low("White blood cell decreased", "3.0", "2.0", "1.0"),
        # Metabolism and nutrition disorders
        _term(
            "Acidosis",
            LOW,
            units.PH,
            relative(1, LLN),
            absolute(3, "7.3", ""),
            clinical_grades="grade 4 (life-threatening) and 5 are clinical",
        ),
        _term(
            "Alkalosis",
            HIGH,
            units.PH,
            relative(1, ULN),
            absolute(3, "7.5", ""),
            clinical_grades="grade 4 (life-threatening) and 5 are clinical",
        ),
        _term(
            "Hypercalcemia",
            HIGH,
            units.CALCIUM,
            relative(1, ULN),
            absolute(2, "2.9", mmol),
            absolute(3, "3.1", mmol),
            absolute(4, "3.4", mmol),
            absolute(2, "11.5", mgdl),
            absolute(3, "12.5", mgdl),
            absolute(4, "13.5", mgdl),
        ),
        _term(
            "Hypercalcemia (ionized)",
            HIGH,
            units.CALCIUM,
            relative(1, ULN),
            absolute(2, "1.5", mmol),
            absolute(3, "1.6", mmol),
            absolute(4, "1.8", mmol),
            # CTCAE gives ionized cut-offs in mmol/L only; in mg/dL we use the 4:1 ratio of CTCAE's own
            # corrected-calcium pairs (8.0 mg/dL = 2.0 mmol/L), so 6.0 mg/dL is exactly the 1.5 cut-off.
            absolute(2, "6.0", mgdl),
            absolute(3, "6.4", mgdl),
            absolute(4, "7.2", mgdl),
            ctcae_term="Hypercalcemia",
        ),
        _term(
            "Hyperkalemia",
            HIGH,
            units.POTASSIUM,
            relative(1, ULN),
            absolute(2, "5.5", mmol),
            absolute(3, "6.0", mmol),
            absolute(4, "7.0", mmol),
        ),
        _term(
            "Hypermagnesemia",
            HIGH,
            units.MAGNESIUM,
            relative(1, ULN),
            absolute(3, "1.23", mmol),
            absolute(4, "3.30", mmol),
            absolute(3, "3.0", mgdl),
            absolute(4, "8.0", mgdl),
        ),
        _term(
            "Hypernatremia",
            HIGH,
            units.SODIUM,
            relative(1, ULN),
            absolute(2, "150", mmol),
            absolute(3, "155", mmol),
            absolute(4, "160", mmol),
        ),
        _term(
            "Hypertriglyceridemia",
            HIGH,
            units.TRIGLYCERIDES,
            absolute(1, "1.71", mmol, inclusive=True),
            absolute(2, "3.42", mmol),
            absolute(3, "5.7", mmol),
            absolute(4, "11.4", mmol),
            absolute(1, "150", mgdl, inclusive=True),
            absolute(2, "300", mgdl),
            absolute(3, "500", mgdl),
            absolute(4, "1000", mgdl),
        ),
        _term(
            "Hyperuricemia",
            HIGH,
            units.URATE,
            relative(1, ULN),
            clinical_grades="grade 3 (physiologic consequences), 4 and 5 are clinical",
        ),
        _term(
            "Hypoalbuminemia",
            LOW,
            units.ALBUMIN,
            relative(1, LLN),
            absolute(2, "30", gl),
            absolute(3, "20", gl),
            clinical_grades="grade 4 (life-threatening) and 5 are clinical",
        ),
        _term(
            "Hypocalcemia",
            LOW,
            units.CALCIUM,
            relative(1, LLN),
            absolute(2, "2.0", mmol),
            absolute(3, "1.75", mmol),
            absolute(4, "1.5", mmol),
            absolute(2, "8.0", mgdl),
            absolute(3, "7.0", mgdl),
            absolute(4, "6.0", mgdl),
        ),
        _term(
            "Hypocalcemia (ionized)",
            LOW,
            units.CALCIUM,
            relative(1, LLN),
            absolute(2, "1.0", mmol),
            absolute(3, "0.9", mmol),
            absolute(4, "0.8", mmol),
            absolute(2, "4.0", mgdl),
            absolute(3, "3.6", mgdl),
            absolute(4, "3.2", mgdl),
            ctcae_term="Hypocalcemia",
        ),
        _term(
            "Hypoglycemia",
            LOW,
            units.GLUCOSE,
            relative(1, LLN),
            absolute(2, "3.0", mmol),
            absolute(3, "2.2", mmol),
            absolute(4, "1.7", mmol),
            absolute(2, "55", mgdl),
            absolute(3, "40", mgdl),
            absolute(4, "30", mgdl),
        ),
        _term(
            "Hypokalemia",
            LOW,
            units.POTASSIUM,
            relative(1, LLN, note="grade 2 if symptomatic and intervention indicated"),
            absolute(3, "3.0", mmol),
            absolute(4, "2.5", mmol),
        ),
        _term(
            "Hypomagnesemia",
            LOW,
            units.MAGNESIUM,
            relative(1, LLN),
            absolute(2, "0.5", mmol),
            absolute(3, "0.4", mmol),
            absolute(4, "0.3", mmol),
            absolute(2, "1.2", mgdl),
            absolute(3, "0.9", mgdl),
            absolute(4, "0.7", mgdl),
        ),
        _term(
            "Hyponatremia",
            LOW,
            units.SODIUM,
            relative(1, LLN),
            absolute(2, "130", mmol, note="grade 3 if symptomatic"),
            absolute(3, "125", mmol),
            absolute(4, "120", mmol),
        ),
        # Clinical-only in v5: a value inside the reference range is still grade 0.
        _term(
            "Hyperglycemia",
            HIGH,
            units.GLUCOSE,
            relative(1, ULN),
            clinical_only=True,
            clinical_grades="CTCAE v5 grades hyperglycemia by its management, not by the glucose value",
        ),
        _term(
            "Hypophosphatemia",
            LOW,
            units.PHOSPHATE,
            relative(1, LLN),
            clinical_only=True,
            clinical_grades="CTCAE v5 grades hypophosphatemia by the intervention it needs, not by value",
        ),
        _term(
            "Hyperphosphatemia",
            HIGH,
            units.PHOSPHATE,
            relative(1, ULN),
            clinical_only=True,
            clinical_grades="CTCAE v5 grades hyperphosphatemia by the intervention it needs, not by value",
        ),
    ]
    return {fold(c.term): c for c in table}


@functools.lru_cache(maxsize=4096)
def fold(name: str) -> str:
    """Case- and whitespace-insensitive key for a term or test name (cached: looked up for every result graded)."""
    return " ".join(name.split()).casefold()


def find_criterion(term: str) -> Criterion | None:
    return criteria().get(fold(term))
