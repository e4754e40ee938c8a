"""Property tests at every cut-off: below / at / above each threshold, and monotonicity."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.safety.ctcae import grade_value
from services.safety.ctcae.criteria import Cut, Direction, Ref, criteria
from services.safety.ctcae.units import BASE_UNIT

LIMITS = {Ref.LLN: Decimal("10"), Ref.ULN: Decimal("20"), Ref.BASELINE: Decimal("30")}
EPS = Decimal("0.0001")
VALUE_GRADED = [c for c in criteria().values() if not c.clinical_only]


def _threshold(cut: Cut) -> Decimal:
    if cut.ref is Ref.ABS:
        return cut.amount
    return LIMITS[cut.ref] * cut.amount + cut.offset


def _grade(term: str, value: Decimal, unit: str, abnormal: bool | None = None) -> int | None:
    return grade_value(
        term,
        value,
        unit,
        lln=LIMITS[Ref.LLN],
        uln=LIMITS[Ref.ULN],
        baseline=LIMITS[Ref.BASELINE],
        baseline_abnormal=abnormal,
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
    t = _threshold(cut)
    high = crit.direction is Direction.HIGH
    beyond, short = (t + EPS, t - EPS) if high else (t - EPS, t + EPS)
    at = _grade(term, t, unit, abnormal)
    assert at is not None
    assert (_grade(term, beyond, unit, abnormal) or 0) >= cut.grade
    if cut.inclusive:
        assert at >= cut.grade
    else:
        # "<LLN - 1.5": the cut-off value itself belongs to the milder side
        assert at == (_grade(term, short, unit, abnormal) or 0)


@settings(max_examples=60, deadline=None)
@given(
    term=st.sampled_from([c.term for c in VALUE_GRADED]),
    a=st.decimals(min_value=Decimal("0"), max_value=Decimal("1000"), places=3),
    b=st.decimals(min_value=Decimal("0"), max_value=Decimal("1000"), places=3),
    abnormal=st.sampled_from([None, True, False]),
)
def test_worse_value_never_gets_lower_grade(term: str, a: Decimal, b: Decimal, abnormal: bool | None) -> None:
    crit = criteria()[term.casefold()]
    unit = BASE_UNIT[crit.quantity.si_kind]
    low, high = sorted((a, b))
    worse, better = (high, low) if crit.direction is Direction.HIGH else (low, high)
    g_worse = _grade(term, worse, unit, abnormal)
    g_better = _grade(term, better, unit, abnormal)
    assert g_worse is not None and g_better is not None
    assert g_worse >= g_better


@settings(max_examples=100, deadline=None)
@given(
    uln=st.decimals(min_value=Decimal("1"), max_value=Decimal("500"), places=1),
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
    censored = grade_value("Neutrophil count decreased", f"<{value}", "10^9/L", lln=lln).grade
    if censored is not None:
        for probe in (Decimal(0), value / 2, max(value - EPS, Decimal(0))):
            assert grade_value("Neutrophil count decreased", probe, "10^9/L", lln=lln).grade == censored
