"""Every term's grade boundaries, written from the CTCAE v5.0 text.

"<LLN - 1.5" means below LLN down to and including 1.5, so a value on a cut-off gets the milder grade,
except where CTCAE writes an inclusive bound (ALT/AST >= 1.5 x abnormal baseline, ALP/GGT >= 2.0 x
abnormal baseline, triglycerides 150 mg/dL - 300 mg/dL).
"""

from __future__ import annotations

import pytest

from services.safety.ctcae import grade_value

# term, unit, lln, uln, [(value, expected grade)]
CASES: list[tuple[str, str, str | None, str | None, list[tuple[str, int | None]]]] = [
    (
        "Anemia",
        "g/L",
        "120",
        "160",
        [("120", 0), ("119", 1), ("100", 1), ("99.9", 2), ("80", 2), ("79.9", 3), ("20", 3)],
    ),
    ("Anemia", "g/dL", "12", "16", [("12", 0), ("10.0", 1), ("9.99", 2), ("8.0", 2), ("7.99", 3)]),
    ("Anemia", "mmol/L", "7.4", "9.9", [("7.4", 0), ("6.2", 1), ("6.19", 2), ("4.9", 2), ("4.89", 3)]),
    (
        "Hemoglobin increased",
        "g/L",
        "120",
        "160",
        [("160", 0), ("161", 1), ("180", 1), ("181", 2), ("200", 2), ("201", 3)],
    ),
    ("Hemoglobin increased", "g/dL", "12", "16", [("18.0", 1), ("18.1", 2), ("20.0", 2), ("20.1", 3)]),
    ("Leukocytosis", "10^9/L", None, None, [("100", 0), ("100.1", 3)]),
    (
        "White blood cell decreased",
        "10^9/L",
        "4",
        "11",
        [("4", 0), ("3.9", 1), ("3.0", 1), ("2.99", 2), ("2.0", 2), ("1.99", 3), ("1.0", 3), ("0.99", 4)],
    ),
    (
        "Neutrophil count decreased",
        "10^9/L",
        "2",
        "7.5",
        [("2", 0), ("1.99", 1), ("1.5", 1), ("1.49", 2), ("1.0", 2), ("0.99", 3), ("0.5", 3), ("0.49", 4)],
    ),
    (
        "Neutrophil count decreased",
        "cells/uL",
        "2000",
        "7500",
        [("1500", 1), ("1499", 2), ("1000", 2), ("999", 3), ("500", 3), ("499", 4)],
    ),
    (
        "Platelet count decreased",
        "10^9/L",
        "150",
        "400",
        [("150", 0), ("149", 1), ("75", 1), ("74.9", 2), ("50", 2), ("49.9", 3), ("25", 3), ("24.9", 4)],
    ),
    (
        "Lymphocyte count decreased",
        "10^9/L",
        "1",
        "4",
        [("1", 0), ("0.99", 1), ("0.8", 1), ("0.79", 2), ("0.5", 2), ("0.49", 3), ("0.2", 3), ("0.19", 4)],
    ),
    ("Lymphocyte count increased", "10^9/L", None, None, [("4", 0), ("4.01", 2), ("20", 2), ("20.1", 3)]),
    (
        "CD4 lymphocytes decreased",
        "10^9/L",
        "0.8",
        None,
        [("0.8", 0), ("0.79", 1), ("0.5", 1), ("0.49", 2), ("0.2", 2), ("0.19", 3), ("0.05", 3), ("0.049", 4)],
    ),
    (
        "CD4 lymphocytes decreased",
        "cells/mm3",
        "800",
        None,
        [("500", 1), ("499", 2), ("200", 2), ("199", 3), ("50", 3), ("49", 4)],
    ),
    (
        "Activated partial thromboplastin time prolonged",
        "s",
        None,
        "40",
        [("40", 0), ("40.1", 1), ("60", 1), ("60.1", 2), ("100", 2), ("100.1", 3)],
    ),
    (
        "Alanine aminotransferase increased",
        "U/L",
        None,
        "40",
        [("40", 0), ("41", 1), ("120", 1), ("121", 2), ("200", 2), ("201", 3), ("800", 3), ("801", 4)],
    ),
    (
        "Aspartate aminotransferase increased",
        "U/L",
        None,
        "40",
        [("40", 0), ("40.5", 1), ("120", 1), ("120.1", 2), ("200", 2), ("200.1", 3), ("800", 3), ("800.1", 4)],
    ),
    (
        "Alkaline phosphatase increased",
        "U/L",
        None,
        "100",
        [("100", 0), ("101", 1), ("250", 1), ("251", 2), ("500", 2), ("501", 3), ("2000", 3), ("2001", 4)],
    ),
    (
        "GGT increased",
        "U/L",
        None,
        "50",
        [("50", 0), ("51", 1), ("125", 1), ("126", 2), ("250", 2), ("251", 3), ("1000", 3), ("1001", 4)],
    ),
    (
        "Blood bilirubin increased",
        "umol/L",
        None,
        "20",
        [("20", 0), ("21", 1), ("30", 1), ("31", 2), ("60", 2), ("61", 3), ("200", 3), ("201", 4)],
    ),
    ("Blood lactate dehydrogenase increased", "U/L", None, "250", [("250", 0), ("251", 1), ("5000", 1)]),
    (
        "CPK increased",
        "U/L",
        None,
        "200",
        [("200", 0), ("201", 1), ("500", 1), ("501", 2), ("1000", 2), ("1001", 3), ("2000", 3), ("2001", 4)],
    ),
    (
        "Creatinine increased",
        "umol/L",
        None,
        "100",
        [("100", 0), ("101", 1), ("150", 1), ("151", 2), ("300", 2), ("301", 3), ("600", 3), ("601", 4)],
    ),
    (
        "Lipase increased",
        "U/L",
        None,
        "60",
        [("60", 0), ("61", 1), ("90", 1), ("91", 2), ("300", 2), ("301", 3), ("100000", 3)],
    ),
    (
        "Serum amylase increased",
        "U/L",
        None,
        "100",
        [("100", 0), ("101", 1), ("150", 1), ("151", 2), ("500", 2), ("501", 3)],
    ),
    ("INR increased", "", None, None, [("1.2", 0), ("1.21", 1), ("1.5", 1), ("1.51", 2), ("2.5", 2), ("2.51", 3)]),
    (
        "Fibrinogen decreased",
        "g/L",
        "2",
        "4",
        [("2", 0), ("1.99", 1), ("1.5", 1), ("1.49", 2), ("1.0", 2), ("0.99", 3), ("0.5", 3), ("0.49", 4)],
    ),
    ("Fibrinogen decreased", "mg/dL", "400", "800", [("50", 4), ("49", 4), ("100", 3), ("99", 4)]),
    ("Haptoglobin decreased", "g/L", "0.3", "2", [("0.3", 0), ("0.29", 1), ("0", 1)]),
    (
        "Cholesterol high",
        "mmol/L",
        None,
        "5.2",
        [("5.2", 0), ("5.21", 1), ("7.75", 1), ("7.76", 2), ("10.34", 2), ("10.35", 3), ("12.92", 3), ("12.93", 4)],
    ),
    (
        "Cholesterol high",
        "mg/dL",
        None,
        "200",
        [("200", 0), ("201", 1), ("300", 1), ("301", 2), ("400", 2), ("401", 3), ("500", 3), ("501", 4)],
    ),
    (
        "Hypertriglyceridemia",
        "mmol/L",
        None,
        None,
        [("1.70", 0), ("1.71", 1), ("3.42", 1), ("3.43", 2), ("5.7", 2), ("5.71", 3), ("11.4", 3), ("11.41", 4)],
    ),
    (
        "Hypertriglyceridemia",
        "mg/dL",
        None,
        None,
        [("149", 0), ("150", 1), ("300", 1), ("301", 2), ("500", 2), ("501", 3), ("1000", 3), ("1001", 4)],
    ),
    ("Hyperuricemia", "umol/L", None, "420", [("420", 0), ("421", 1)]),
    ("Hyperuricemia", "mg/dL", None, "7", [("7", 0), ("7.1", 1)]),
    (
        "Hypoalbuminemia",
        "g/L",
        "35",
        "50",
        [("35", 0), ("34", 1), ("30", 1), ("29.9", 2), ("20", 2), ("19.9", 3), ("5", 3)],
    ),
    ("Hypoalbuminemia", "g/dL", "3.5", "5", [("3", 1), ("2.9", 2), ("2", 2), ("1.9", 3)]),
    (
        "Hypercalcemia",
        "mmol/L",
        "2.1",
        "2.6",
        [("2.6", 0), ("2.61", 1), ("2.9", 1), ("2.91", 2), ("3.1", 2), ("3.11", 3), ("3.4", 3), ("3.41", 4)],
    ),
    (
        "Hypercalcemia",
        "mg/dL",
        "8.5",
        "10.5",
        [("10.5", 0), ("10.6", 1), ("11.5", 1), ("11.6", 2), ("12.5", 2), ("12.6", 3), ("13.5", 3), ("13.6", 4)],
    ),
    (
        "Hypocalcemia",
        "mmol/L",
        "2.1",
        "2.6",
        [("2.1", 0), ("2.09", 1), ("2.0", 1), ("1.99", 2), ("1.75", 2), ("1.74", 3), ("1.5", 3), ("1.49", 4)],
    ),
    (
        "Hypocalcemia",
        "mg/dL",
        "8.5",
        "10.5",
        [("8.5", 0), ("8.4", 1), ("8.0", 1), ("7.9", 2), ("7.0", 2), ("6.9", 3), ("6.0", 3), ("5.9", 4)],
    ),
    (
        "Hypercalcemia (ionized)",
        "mmol/L",
        "1.1",
        "1.3",
        [("1.3", 0), ("1.31", 1), ("1.5", 1), ("1.51", 2), ("1.6", 2), ("1.61", 3), ("1.8", 3), ("1.81", 4)],
    ),
    (
        "Hypocalcemia (ionized)",
        "mmol/L",
        "1.1",
        "1.3",
        [("1.1", 0), ("1.09", 1), ("1.0", 1), ("0.99", 2), ("0.9", 2), ("0.89", 3), ("0.8", 3), ("0.79", 4)],
    ),
    (
        "Hypocalcemia (ionized)",
        "mg/dL",
        "4.5",
        "5.3",
        [("4.0", 1), ("3.9", 2), ("3.6", 2), ("3.5", 3), ("3.2", 3), ("3.1", 4)],
    ),
    (
        "Hyperkalemia",
        "mmol/L",
        "3.5",
        "5.1",
        [("5.1", 0), ("5.2", 1), ("5.5", 1), ("5.6", 2), ("6.0", 2), ("6.1", 3), ("7.0", 3), ("7.1", 4)],
    ),
    ("Hypokalemia", "mmol/L", "3.5", "5.1", [("3.5", 0), ("3.4", 1), ("3.0", 1), ("2.9", 3), ("2.5", 3), ("2.4", 4)]),
    (
        "Hypernatremia",
        "mmol/L",
        "135",
        "145",
        [("145", 0), ("146", 1), ("150", 1), ("151", 2), ("155", 2), ("156", 3), ("160", 3), ("161", 4)],
    ),
    (
        "Hyponatremia",
        "mmol/L",
        "135",
        "145",
        [
            ("135", 0),
            ("134", 1),
            ("130", 1),
            ("129.9", 2),
            ("129", 2),
            ("125", 2),
            ("124.9", 3),
            ("120", 3),
            ("119", 4),
        ],
    ),
    (
        "Hypermagnesemia",
        "mmol/L",
        "0.7",
        "1.0",
        [("1.0", 0), ("1.01", 1), ("1.23", 1), ("1.24", 3), ("3.30", 3), ("3.31", 4)],
    ),
    (
        "Hypermagnesemia",
        "mg/dL",
        "1.7",
        "2.4",
        [("2.4", 0), ("2.5", 1), ("3.0", 1), ("3.1", 3), ("8.0", 3), ("8.1", 4)],
    ),
    (
        "Hypomagnesemia",
        "mmol/L",
        "0.7",
        "1.0",
        [("0.7", 0), ("0.69", 1), ("0.5", 1), ("0.49", 2), ("0.4", 2), ("0.39", 3), ("0.3", 3), ("0.29", 4)],
    ),
    ("Hypomagnesemia", "mg/dL", "1.7", "2.4", [("1.2", 1), ("1.1", 2), ("0.9", 2), ("0.8", 3), ("0.7", 3), ("0.6", 4)]),
    (
        "Hypoglycemia",
        "mmol/L",
        "3.9",
        "6.1",
        [("3.9", 0), ("3.8", 1), ("3.0", 1), ("2.9", 2), ("2.2", 2), ("2.1", 3), ("1.7", 3), ("1.6", 4)],
    ),
    (
        "Hypoglycemia",
        "mg/dL",
        "70",
        "100",
        [("70", 0), ("69", 1), ("55", 1), ("54", 2), ("40", 2), ("39", 3), ("30", 3), ("29", 4)],
    ),
    ("Acidosis", "", "7.35", "7.45", [("7.35", 0), ("7.34", 1), ("7.3", 1), ("7.29", 3)]),
    ("Alkalosis", "", "7.35", "7.45", [("7.45", 0), ("7.46", 1), ("7.5", 1), ("7.51", 3)]),
    # clinical-only in v5: beyond the limit is a grade 1 laboratory finding (a floor: the rest is clinical)
    ("Hyperglycemia", "mmol/L", "3.9", "6.1", [("6.1", 0), ("6.2", 1), ("30", 1)]),
    ("Hypophosphatemia", "mmol/L", "0.8", "1.5", [("0.8", 0), ("0.79", 1)]),
]

PARAMS = [
    pytest.param(term, unit, lln, uln, value, expected, id=f"{term}-{value}{unit}")
    for term, unit, lln, uln, points in CASES
    for value, expected in points
]


@pytest.mark.parametrize(("term", "unit", "lln", "uln", "value", "expected"), PARAMS)
def test_grade_boundaries(
    term: str, unit: str, lln: str | None, uln: str | None, value: str, expected: int | None
) -> None:
    result = grade_value(term, value, unit, lln=lln, uln=uln)
    assert result.grade == expected, result.reason
    assert result.reason


def test_every_lab_term_has_boundary_cases() -> None:
    from services.safety.ctcae.criteria import criteria

    covered = {term.casefold() for term, *_ in CASES}
    assert set(criteria()) - covered == {"hyperphosphatemia"}
