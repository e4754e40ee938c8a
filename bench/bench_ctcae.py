"""Throughput of the CTCAE grading engine: `python -m bench.bench_ctcae [N]`.

Grades N mixed lab values (counts, chemistry with LLN/ULN, liver tests with baseline, unit conversions,
censored text) and prints values/s beside a trivial baseline over the same inputs: parse the value as a
Decimal and compare it with one cut-off. The ratio says what the engine's work costs over the minimum.
"""

from __future__ import annotations

import random
import sys
import time
from decimal import Decimal

from services.safety.ctcae import grade_value

Case = tuple[str, str, str, str | None, str | None, str | None]

_TEMPLATES: list[tuple[str, str, float, float, str | None, str | None, bool]] = [
    # term, unit, low, high, lln, uln, with baseline
    ("Neutrophil count decreased", "10^9/L", 0.1, 6.0, "1.8", "7.5", False),
    ("Neutrophil count decreased", "cells/uL", 100, 6000, "1800", "7500", False),
    ("Platelet count decreased", "10^3/uL", 5, 400, "150", "400", False),
    ("Anemia", "g/dL", 5.0, 17.0, "12", "16", False),
    ("Anemia", "mmol/L", 3.0, 11.0, "7.4", "9.9", False),
    ("Alanine aminotransferase increased", "U/L", 5, 1200, "7", "40", True),
    ("Blood bilirubin increased", "umol/L", 3, 400, "3", "21.4", True),
    ("Creatinine increased", "mg/dL", 0.3, 9.0, "0.6", "1.2", True),
    ("Hypokalemia", "mEq/L", 2.0, 6.0, "3.5", "5.1", False),
    ("Hypercalcemia", "mg/dL", 7.0, 15.0, "8.6", "10.3", False),
    ("Hyponatremia", "mmol/L", 115, 150, "135", "145", False),
    ("Hypoglycemia", "mg/dL", 20, 200, "70", "99", False),
]


def make_cases(count: int, seed: int = 7) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for i in range(count):
        term, unit, low, high, lln, uln, with_baseline = _TEMPLATES[i % len(_TEMPLATES)]
        value = f"{rng.uniform(low, high):.2f}"
        if i % 97 == 0:
            value = "<" + value
        baseline = f"{rng.uniform(low, high):.2f}" if with_baseline else None
        cases.append((term, value, unit, lln, uln, baseline))
    return cases


def run_engine(cases: list[Case]) -> int:
    graded = 0
    for term, value, unit, lln, uln, baseline in cases:
        if grade_value(term, value, unit, lln=lln, uln=uln, baseline=baseline).grade is not None:
            graded += 1
    return graded


def run_baseline(cases: list[Case]) -> int:
    cut = Decimal("1.5")
    hits = 0
    for _term, value, _unit, _lln, _uln, _baseline in cases:
        if Decimal(value.lstrip("<")) < cut:
            hits += 1
    return hits


def measure(label: str, work: object, cases: list[Case]) -> float:
    assert callable(work)
    start = time.perf_counter()
    work(cases)
    elapsed = time.perf_counter() - start
    rate = len(cases) / elapsed
    print(f"{label:<28} {len(cases):>8} values in {elapsed:6.3f} s = {rate:>12,.0f} values/s")
    return rate


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    cases = make_cases(count)
    run_engine(cases[:1000])  # warm the per-(term, unit) caches
    engine = measure("engine (grade_value)", run_engine, cases)
    baseline = measure("baseline (Decimal compare)", run_baseline, cases)
    print(f"ratio baseline/engine: {baseline / engine:.1f}x; engine target >= 100,000 values/s per core")


if __name__ == "__main__":
    main()
