"""Grade one lab value against CTCAE v5.0.

Numbers are `decimal.Decimal` end to end: a binary float puts 1.5 x 21.4 at 32.099999999999994 and grades
bilirubin 32.1 one grade too high. Inputs may be `str`, `int` or `Decimal`; a `float` is accepted only
through its shortest `repr` (which is the decimal literal a JSON sender wrote, e.g. 32.1 -> "32.1") and is
never used in arithmetic. A value that cannot be graded gets grade None and a reason, never a silent 0.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Union

from services.safety.ctcae import units
from services.safety.ctcae.criteria import Criterion, Cut, Direction, Mode, Ref, find_criterion
from services.safety.ctcae.terms import lookup_term
from services.safety.ctcae.tests_map import terms_for_test
from services.safety.ctcae.units import Kind

Number = Union[str, int, Decimal, float]  # noqa: UP007 - a runtime alias, kept readable for callers

_MAX_DIGITS = 20  # keeps every product below the default 28-digit context exact
_OPERATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "≤": "<=", "≥": ">="}


@dataclass(frozen=True, slots=True)
class Grade:
    """One term's grade for one value. `grade` is None when the value cannot be graded; `reason` says why."""

    term: str
    grade: int | None
    reason: str
    value_si: Decimal | None
    unit_si: str | None


class _Unreadable(ValueError):
    """A number that is not one; the message goes into the reason."""


def _to_decimal(raw: object, what: str) -> Decimal:
    if isinstance(raw, str):
        text = raw.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise _Unreadable(f"{what} {raw!r} is not a number") from None
        short = len(text) <= _MAX_DIGITS
    elif isinstance(raw, bool):
        raise _Unreadable(f"{what} {raw!r} is not a number")
    elif isinstance(raw, Decimal):
        number, short = raw, False
    elif isinstance(raw, int):
        number, short = Decimal(raw), False
    elif isinstance(raw, float):
        number, short = Decimal(repr(raw)), False
    else:
        raise _Unreadable(f"{what} of type {type(raw).__name__} is not a number")
    if not number.is_finite():
        raise _Unreadable(f"{what} {raw!r} is not a finite number")
    if number < 0:
        raise _Unreadable(f"{what} {raw!r} is negative")
    if not short and len(number.as_tuple().digits) > _MAX_DIGITS:
        raise _Unreadable(f"{what} {raw!r} has more than {_MAX_DIGITS} significant digits")
    return number


def parse_result(raw: object) -> tuple[str, Decimal]:
    """A lab result as (operator, number); operator is "" for an exact value, or <, >, <=, >= if censored."""
    if isinstance(raw, str):
        text = raw.strip()
        for length in (2, 1):
            op = _OPERATORS.get(text[:length])
            if op is not None:
                return op, _to_decimal(text[length:], "value")
    return "", _to_decimal(raw, "value")


def parse_reference(raw: object, what: str) -> Decimal | None:
    """LLN/ULN/baseline: None or blank means not given; anything else must be a plain number."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _to_decimal(raw, what)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What grading a term in one unit needs, worked out once per (term, unit)."""

    criterion: Criterion
    to_grading: Decimal  # value in the given unit -> base unit the cut-offs are written in
    to_si: Decimal | None  # value in the given unit -> the quantity's SI unit (None: unit not given)
    cuts: dict[Mode, tuple[Cut, ...]]
    top_grade: int
    converted_note: str


@functools.lru_cache(maxsize=4096)
def _plan(term: str, unit: str) -> _Plan | Grade:
    criterion = find_criterion(term)
    if criterion is None:
        info = lookup_term(term)
        if info is None:
            return Grade(term, None, f"unknown term {term!r}: not a CTCAE v5.0 lab-gradable term", None, None)
        return Grade(
            info.term,
            None,
            f"{info.term} is not graded from a lab value; the investigator grades it",
            None,
            None,
        )
    name = criterion.term
    quantity = criterion.quantity
    spec = units.parse_unit(unit)
    if not unit.strip() and not criterion.kinds_with_absolutes and not quantity.accepts(Kind.UNITLESS):
        # Only multiples of LLN/ULN/baseline: comparable as long as they share the value's unit.
        cuts = {mode: tuple(c for c in criterion.cuts if c.mode in (Mode.ANY, mode)) for mode in Mode}
        note = " (no unit given: value and limits taken to share one)"
        return _Plan(criterion, Decimal(1), None, cuts, max(c.grade for c in criterion.cuts), note)
    if spec is None:
        return Grade(name, None, f"unit {unit!r} is not recognised for {quantity.name}", None, None)
    if spec.kind is Kind.PERCENT:
        if quantity.is_count:
            reason = "a percentage differential is not an absolute count; CTCAE grades the absolute count"
        else:
            reason = f"unit {unit!r} is a percentage, not a unit of {quantity.name}"
        return Grade(name, None, reason, None, None)
    if not quantity.accepts(spec.kind):
        return Grade(name, None, f"unit {unit!r} is not a unit of {quantity.name}", None, None)
    to_si = spec.factor * quantity.to_si_kind[spec.kind] * quantity.si_scale
    to_si = Decimal(1) if to_si == 1 else to_si
    grading_kind: Kind
    if not criterion.kinds_with_absolutes or spec.kind in criterion.kinds_with_absolutes:
        grading_kind, to_grading, note = spec.kind, Decimal(1) if spec.factor == 1 else spec.factor, ""
    else:
        grading_kind = quantity.si_kind
        to_grading = spec.factor * quantity.to_si_kind[spec.kind]
        note = f" (converted to {units.BASE_UNIT[grading_kind]}: CTCAE states this term's cut-offs in that unit)"
    usable = tuple(c for c in criterion.cuts if c.kind is None or c.kind is grading_kind)
    cuts = {
        mode: tuple(c for c in usable if c.mode is Mode.ANY or c.mode is mode)
        for mode in (Mode.ANY, Mode.BASELINE_NORMAL, Mode.BASELINE_ABNORMAL)
    }
    top = max(c.grade for c in usable)
    return _Plan(criterion, to_grading, to_si, cuts, top, note)


def _passes(value: Decimal, threshold: Decimal, cut: Cut, high: bool) -> bool:
    if high:
        return value > threshold or (cut.inclusive and value == threshold)
    return value < threshold or (cut.inclusive and value == threshold)


def _point_grade(value: Decimal, thresholds: list[tuple[Cut, Decimal]], high: bool) -> tuple[int, Cut | None]:
    best, winner = 0, None
    for cut, threshold in thresholds:
        if cut.grade > best and _passes(value, threshold, cut, high):
            best, winner = cut.grade, cut
    return best, winner


def _choose_mode(
    criterion: Criterion,
    lln: Decimal | None,
    uln: Decimal | None,
    baseline: Decimal | None,
    flag: bool | None,
) -> tuple[Mode, str]:
    if not criterion.baseline_switch:
        return Mode.ANY, ""
    if flag is True:
        return Mode.BASELINE_ABNORMAL, "; baseline abnormal: graded against baseline"
    if flag is False:
        return Mode.BASELINE_NORMAL, ""
    limit = uln if criterion.direction is Direction.HIGH else lln
    if baseline is not None and limit is not None:
        beyond = baseline > limit if criterion.direction is Direction.HIGH else baseline < limit
        if beyond:
            return Mode.BASELINE_ABNORMAL, "; baseline beyond the reference limit: graded against baseline"
        return Mode.BASELINE_NORMAL, ""
    return Mode.BASELINE_NORMAL, "; baseline status unknown: graded as if baseline was normal"


def grade_value(
    term: str,
    value: Number,
    unit: str | None,
    *,
    lln: Number | None = None,
    uln: Number | None = None,
    baseline: Number | None = None,
    baseline_abnormal: bool | None = None,
) -> Grade:
    """Grade `value` (in `unit`; LLN, ULN and baseline in the same unit) for one CTCAE term."""
    unit_text = unit or ""
    plan = _plan(term, unit_text)
    if isinstance(plan, Grade):
        return plan
    criterion = plan.criterion
    name = criterion.term
    si_unit: str | None = criterion.quantity.si_unit
    if value is None or (isinstance(value, str) and not value.strip()):
        return Grade(name, None, "no value", None, None)
    try:
        op, number = parse_result(value)
        refs: tuple[Decimal | None, ...] = (
            None,
            parse_reference(lln, "LLN"),
            parse_reference(uln, "ULN"),
            parse_reference(baseline, "baseline"),
        )
    except _Unreadable as err:
        return Grade(name, None, str(err), None, None)
    given, scale = number, plan.to_grading
    if scale != 1:
        number = number * scale
        refs = tuple(None if r is None else r * scale for r in refs)
    mode, mode_note = _choose_mode(criterion, refs[1], refs[2], refs[3], baseline_abnormal)

    thresholds: list[tuple[Cut, Decimal]] = []
    missing: list[Cut] = []
    for cut in plan.cuts[mode]:
        if not cut.slot:
            thresholds.append((cut, cut.amount))
            continue
        ref_value = refs[cut.slot]
        if ref_value is None:
            if not cut.optional:
                missing.append(cut)
            continue
        thresholds.append((cut, ref_value * cut.amount + cut.offset))
    high = criterion.direction is Direction.HIGH
    shown = f"{value} {unit_text}".rstrip()
    if op:
        return _grade_censored(plan, op, number, thresholds, missing, high, shown)

    grade, winner = _point_grade(number, thresholds, high)
    value_si = None if plan.to_si is None else given * plan.to_si
    if value_si is None:
        si_unit = None
    blockers = [c for c in missing if c.grade > grade]
    if blockers:
        needed = sorted({c.ref.value for c in blockers})
        floor = f"; at least grade {grade}" if grade else ""
        return Grade(name, None, f"not gradable without {' and '.join(needed)}{floor}{mode_note}", value_si, si_unit)
    if criterion.clinical_only:
        if grade:
            return Grade(
                name,
                None,
                f"{shown} beyond {winner.label if winner else 'limit'}: {criterion.clinical_grades}",
                value_si,
                si_unit,
            )
        return Grade(name, 0, "grade 0: within the reference limit", value_si, si_unit)
    return Grade(
        name,
        grade,
        _explain(plan, grade, winner, shown, high, mode_note, _refs_given(lln, uln, baseline)),
        value_si,
        si_unit,
    )


def _refs_given(lln: object, uln: object, baseline: object) -> str:
    parts = [f"{n} {v}" for n, v in (("LLN", lln), ("ULN", uln), ("baseline", baseline)) if v not in (None, "")]
    return ", ".join(parts)


def _explain(plan: _Plan, grade: int, winner: Cut | None, shown: str, high: bool, mode_note: str, refs: str) -> str:
    op = ">" if high else "<"
    if winner is None:
        return f"grade 0: {shown} reaches no cut-off{mode_note}"
    sign = op + "=" if winner.inclusive else op
    text = f"grade {grade}: {shown} {sign} {winner.label}"
    if winner.ref is not Ref.ABS and refs:
        text += f" ({refs})"
    text += plan.converted_note if winner.ref is Ref.ABS or plan.to_si is None else ""
    if winner.note:
        text += f"; {winner.note}"
    if grade == plan.top_grade and plan.criterion.clinical_grades:
        text += f"; {plan.criterion.clinical_grades}"
    return text + mode_note


def _grade_censored(
    plan: _Plan,
    op: str,
    bound: Decimal,
    thresholds: list[tuple[Cut, Decimal]],
    missing: list[Cut],
    high: bool,
    shown: str,
) -> Grade:
    """A censored result ("<0.2") is graded only when every value it allows gets the same grade."""
    name = plan.criterion.term
    zero = Decimal(0)
    if op.startswith("<"):
        low, high_end, low_in, high_in = zero, bound, True, op == "<="
    else:
        cuts_max = max([t for _, t in thresholds] + [bound])
        low, high_end, low_in, high_in = bound, cuts_max * 2 + 1, op == ">=", True
    inner = sorted({t for _, t in thresholds if low < t < high_end})
    edges = [low, *inner, high_end]
    points = list(inner)
    points += [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    if low_in:
        points.append(low)
    if high_in:
        points.append(high_end)
    grades = {_point_grade(p, thresholds, high)[0] for p in points}
    unresolved = any(c.grade > min(grades) for c in missing)
    if len(grades) == 1 and not unresolved and not plan.criterion.clinical_only:
        grade = grades.pop()
        return Grade(name, grade, f"grade {grade}: every value {shown} is grade {grade}", None, None)
    if unresolved:
        needed = sorted({c.ref.value for c in missing})
        return Grade(name, None, f"censored value {shown} is not gradable without {' and '.join(needed)}", None, None)
    if plan.criterion.clinical_only:
        return Grade(name, None, f"censored value {shown}: {plan.criterion.clinical_grades}", None, None)
    return Grade(name, None, f"censored value {shown} could be grade {min(grades)} to {max(grades)}", None, None)


def worst_grade(results: Iterable[Grade]) -> Grade | None:
    """The result that matters for a test grading two directions: the highest grade, then an ungradable
    one (we cannot call the value normal), then a grade 0. None only for no results."""
    best: Grade | None = None
    best_key = (-1, -1)
    for result in results:
        if result.grade is None:
            key = (1, 0)
        elif result.grade > 0:
            key = (2, result.grade)
        else:
            key = (0, 0)
        if key > best_key:
            best, best_key = result, key
    return best


def grade_test(
    test: str,
    value: Number,
    unit: str | None,
    *,
    lln: Number | None = None,
    uln: Number | None = None,
    baseline: Number | None = None,
    baseline_abnormal: bool | None = None,
) -> list[Grade]:
    """Grade a test (CDISC LBTESTCD or LOINC) for every term it grades; an unknown test gives one reason."""
    terms = terms_for_test(test)
    if not terms:
        return [Grade(test, None, f"test {test!r} grades no CTCAE term (unknown LBTESTCD or LOINC)", None, None)]
    return [
        grade_value(term, value, unit, lln=lln, uln=uln, baseline=baseline, baseline_abnormal=baseline_abnormal)
        for term in terms
    ]
