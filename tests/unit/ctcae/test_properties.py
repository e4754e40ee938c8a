"""Property tests at every cut-off: below / at / above each threshold, and monotonicity."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.safety.ctcae import grade_value
from services.safety.ctcae.criteria import Cut, Direction, Ref, criteria, fold
from services.safety.ctcae.plausibility import plausible_range
from services.safety.ctcae.units import BASE_UNIT

EPS = Decimal("0.0001")
VALUE_GRADED = [c for c in criteria().values() if not c.clinical_only]
# (LLN, ULN, baseline) in each term's base unit; (10, 20, 30) unless that is not a human value for the analyte
# (plausibility would refuse it): then limits a lab would print.
REALISTIC = {
    "Anemia": ("120", "160", "140"),
    "Hemoglobin increased": ("120", "160", "140"),
    "Hypoalbuminemia": ("35", "50", "40"),
    "Blood bilirubin increased": ("0.003", "0.02", "0.03"),
    "Creatinine increased": ("0.05", "0.1", "0.08"),
    "Hyperuricemia": ("0.1", "0.4", "0.3"),
    "CD4 lymphocytes decreased": ("0.6", "1.5", "1.0"),
    "Fibrinogen decreased": ("2", "4", "3"),
    "Hypocalcemia": ("2.1", "2.6", "2.4"),
    "Hypercalcemia": ("2.1", "2.6", "2.4"),
    "Hypocalcemia (ionized)": ("1.1", "1.3", "1.2"),
    "Hypercalcemia (ionized)": ("1.1", "1.3", "1.2"),
    "Hypomagnesemia": ("0.7", "1.0", "0.8"),
    "Hypermagnesemia": ("0.7", "1.0", "0.8"),
    "Hypokalemia": ("3.5", "5.1", "4.0"),
    "Hyperkalemia": ("3.5", "5.1", "4.0"),
    "Hyponatremia": ("135", "145", "140"),
    "Hypernatremia": ("135", "145", "140"),
    "Alkaline phosphatase increased": ("40", "130", "100"),
    "Blood lactate dehydrogenase increased": ("100", "250", "200"),
    "CPK increased": ("30", "200", "150"),
    "Serum amylase increased": ("30", "100", "80"),
    "Acidosis": ("7.35", "7.45", "7.4"),
    "Alkalosis": ("7.35", "7.45", "7.4"),
}


def limits(term: str) -> dict[Ref, Decimal]:
    lln, uln, baseline = REALISTIC.get(criteria()[fold(term)].term, ("10", "20", "30"))
    return {Ref.LLN: Decimal(lln), Ref.ULN: Decimal(uln), Ref.BASELINE: Decimal(baseline)}


def value_range(term: str) -> tuple[Decimal, Decimal]:
    """The values a body can have for the term's analyte, in its base unit (plausibility refuses the rest)."""
    crit = criteria()[fold(term)]
    bounds = plausible_range(term)
    scale = crit.quantity.si_scale
    low = bounds.low / scale if bounds is not None and bounds.low is not None else Decimal(0)
    high = bounds.high / scale if bounds is not None and bounds.high is not None else Decimal(1000)
    return low, high


def _threshold(term: str, cut: Cut) -> Decimal:
    if cut.ref is Ref.ABS:
        return cut.amount
    return limits(term)[cut.ref] * cut.amount + cut.offset


def _grade(
    term: str, value: Decimal, unit: str, abnormal: bool | None = None, anticoagulated: bool | None = None
) -> int | None:
    refs = limits(term)
    return grade_value(
        term,
        value,
        unit,
        lln=refs[Ref.LLN],
        uln=refs[Ref.ULN],
        baseline=refs[Ref.BASELINE],
        baseline_abnormal=abnormal,
        anticoagulated=anticoagulated,
    ).grade


CUTOFFS = [
    pytest.param(c.term, cut, id=f"{c.term}-g{cut.grade}-{cut.label}")
    for c in VALUE_GRADED
    for cut in c.cuts
    if cut.kind is None or BASE_UNIT[cut.kind] == BASE_UNIT[c.quantity.si_kind]
]


@pytest.mark.parametrize(("term", "cut"), CUTOFFS)
def test_each_cutoff_below_at_above(term: str, cut: Cut) -> None:
    crit = criteria()[term.casefold()]
    unit = BASE_UNIT[crit.quantity.si_kind]
    abnormal = {"baseline abnormal": True, "baseline normal": False}.get(cut.mode.value)
    coag = cut.anticoagulation
    t = _threshold(term, cut)
    high = crit.direction is Direction.HIGH
    beyond, short = (t + EPS, t - EPS) if high else (t - EPS, t + EPS)
    at = _grade(term, t, unit, abnormal, coag)
    assert at is not None
    assert (_grade(term, beyond, unit, abnormal, coag) or 0) >= cut.grade
    if cut.inclusive:
        assert at >= cut.grade
    else:
        # "<LLN - 1.5": the cut-off value itself belongs to the milder side
        assert at == (_grade(term, short, unit, abnormal, coag) or 0)


@settings(max_examples=60, deadline=None)
@given(
    term=st.sampled_from([c.term for c in VALUE_GRADED]),
    a=st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4),
    b=st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4),
    abnormal=st.sampled_from([None, True, False]),
    anticoagulated=st.sampled_from([None, True, False]),
)
def test_worse_value_never_gets_lower_grade(
    term: str, a: Decimal, b: Decimal, abnormal: bool | None, anticoagulated: bool | None
) -> None:
    crit = criteria()[term.casefold()]
    unit = BASE_UNIT[crit.quantity.si_kind]
    floor, ceiling = value_range(term)
    low, high = (floor + (ceiling - floor) * x for x in sorted((a, b)))
    worse, better = (high, low) if crit.direction is Direction.HIGH else (low, high)
    g_worse = _grade(term, worse, unit, abnormal, anticoagulated)
    g_better = _grade(term, better, unit, abnormal, anticoagulated)
    assert g_worse is not None and g_better is not None
    assert g_worse >= g_better


@settings(max_examples=100, deadline=None)
@given(
    uln=st.decimals(min_value=Decimal("10"), max_value=Decimal("200"), places=1),  # where a lab's ALT ULN sits
    multiple=st.sampled_from(["1", "3.0", "5.0", "20.0"]),
)
def test_alt_exact_multiple_of_uln_gets_milder_grade(uln: Decimal, multiple: str) -> None:
    value = uln * Decimal(multiple)
    expected = {"1": 0, "3.0": 1, "5.0": 2, "20.0": 3}[multiple]
    assert grade_value("Alanine aminotransferase increased", value, "U/L", uln=uln).grade == expected
    assert grade_value("Alanine aminotransferase increased", value + EPS, "U/L", uln=uln).grade == expected + 1


@settings(max_examples=100, deadline=None)
@given(
    lln=st.decimals(min_value=Decimal("1.6"), max_value=Decimal("3"), places=2),
    value=st.decimals(min_value=Decimal("0"), max_value=Decimal("5"), places=3),
)
def test_neutrophil_censored_below_agrees_with_every_value_it_allows(lln: Decimal, value: Decimal) -> None:
    censored = grade_value("Neutrophil count decreased", f"<{value}", "10^9/L", lln=lln)
    if censored.grade is not None:
        probes = [
            grade_value("Neutrophil count decreased", probe, "10^9/L", lln=lln).grade
            for probe in (Decimal(0), value / 2, max(value - EPS, Decimal(0)))
        ]
        if censored.floor:  # the least any value it allows is graded; none is graded lower
            assert all(p is not None and p >= censored.grade for p in probes)
            assert max(value - EPS, Decimal(0)) == 0 or probes[2] == censored.grade
        else:
            assert all(p == censored.grade for p in probes)
