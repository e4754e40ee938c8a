"""Grade one lab value against CTCAE v5.0.

Numbers are `decimal.Decimal` end to end: a binary float puts 1.5 x 21.4 at 32.099999999999994 and grades
bilirubin 32.1 one grade too high. Inputs may be `str`, `int` or `Decimal`; a `float` is accepted only
through its shortest `repr` (which is the decimal literal a JSON sender wrote, e.g. 32.1 -> "32.1") and is
never used in arithmetic. A value that cannot be graded gets grade None and a reason, never a silent 0.

Where missing data (a limit, a censored value, the clinical half of a v5 definition) leaves several grades
possible, the grade is the lowest every reading allows, marked `floor` ("at least grade 3"): a floor at
the alert threshold pages. A value that no body can have in its stated unit, or a unit we do not know, is
not graded and carries a data-quality `finding` for the site.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Union

from services.safety.ctcae import units
from services.safety.ctcae.criteria import Criterion, Cut, Direction, Mode, Ref, find_criterion, fold
from services.safety.ctcae.plausibility import Plausible, plausible_range
from services.safety.ctcae.terms import lookup_term
from services.safety.ctcae.tests_map import terms_for_test
from services.safety.ctcae.units import Kind

Number = Union[str, int, Decimal, float]  # noqa: UP007 - a runtime alias, kept readable for callers

_MAX_DIGITS = 20  # keeps every product below the default 28-digit context exact
_OPERATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "≤": "<=", "≥": ">="}


UNKNOWN_UNIT = "unknown_unit"
IMPLAUSIBLE_VALUE = "implausible_value"
AMBIGUOUS_VALUE = "ambiguous_value"


@dataclass(frozen=True, slots=True)
class Finding:
    """A data-quality finding the site must resolve: a stable `code` and what was seen (and likely meant)."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Grade:
    """One term's grade for one value. `grade` is None when the value cannot be graded; `reason` says why.

    `floor`: the grade is the lowest the data allows and missing data could make it higher ("at least").
    `finding`: set when the value could not be graded because of a data-quality problem (unit, plausibility).
    """

    term: str
    grade: int | None
    reason: str
    value_si: Decimal | None
    unit_si: str | None
    floor: bool = False
    finding: Finding | None = None


class _Unreadable(ValueError):
    """A number that is not one; the message goes into the reason."""


class _Ambiguous(_Unreadable):
    """A number with two readings ("1,500": one and a half, or fifteen hundred); `readings` are both."""

    def __init__(self, message: str, readings: tuple[str, str]) -> None:
        super().__init__(message)
        self.readings = readings


_DECIMAL_COMMA = re.compile(r"^(\d+),(\d+)$")


def _decimal_comma(text: str, what: str) -> str:
    """European labs write 0,45: read the comma as the decimal point where nothing else is possible. A comma
    before exactly three digits after a non-zero integer part ("1,500") may be a thousands separator: that
    is ambiguous, and ambiguity is never resolved by a guess."""
    match = _DECIMAL_COMMA.fullmatch(text)
    if match is None:
        return text
    whole, fraction = match.groups()
    if len(fraction) == 3 and whole.lstrip("0"):
        raise _Ambiguous(
            f"{what} {text!r} is ambiguous: {whole}.{fraction} with a decimal comma, or {whole}{fraction} with a "
            "thousands separator",
            (f"{whole}.{fraction}", f"{whole}{fraction}"),
        )
    return f"{whole}.{fraction}"


def _to_decimal(raw: object, what: str) -> Decimal:
    if isinstance(raw, str):
        text = raw.strip()
        if "," in text:
            text = _decimal_comma(text, what)
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


_ABNORMAL_FLAG = re.compile(r"(?<=\d)\s*(?:HH|LL|H|L|\(H\)|\(L\)|\*+|!+)$")
"""The lab's high/low marker printed after the number ("0.45 L", "7.2*"): it is not part of the value."""


def parse_result(raw: object) -> tuple[str, Decimal]:
    """A lab result as (operator, number); operator is "" for an exact value, or <, >, <=, >= if censored."""
    if isinstance(raw, str):
        text = raw.strip()
        if text and not text[-1].isdigit():
            text = _ABNORMAL_FLAG.sub("", text)
        for length in (2, 1):
            op = _OPERATORS.get(text[:length])
            if op is not None:
                return op, _to_decimal(text[length:], "value")
        return "", _to_decimal(text, "value")
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
    cuts: dict[Mode, tuple[Cut, ...]]  # for a subject not on anticoagulation (or not known to be)
    top_grade: int
    converted_note: str
    plausible: tuple[Decimal | None, Decimal | None] | None = None  # value bounds in the given unit
    anticoagulated_cuts: dict[Mode, tuple[Cut, ...]] | None = None  # INR: the cuts on anticoagulation
    uln_band: tuple[Decimal, Decimal] | None = None  # where a ULN can sit, in the given unit


def _by_mode(cuts: tuple[Cut, ...], modes: tuple[Mode, ...]) -> tuple[dict[Mode, tuple[Cut, ...]], ...]:
    """Cut-offs per baseline mode: (not on anticoagulation, on it); the second None-free only for INR."""
    return tuple(
        {
            mode: tuple(
                c
                for c in cuts
                if (c.mode is Mode.ANY or c.mode is mode) and (c.anticoagulation is None or c.anticoagulation is coag)
            )
            for mode in modes
        }
        for coag in (False, True)
    )


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
    spec = units.parse_unit_for(unit, quantity)
    if not unit.strip() and not criterion.kinds_with_absolutes and not quantity.accepts(Kind.UNITLESS):
        # Only multiples of LLN/ULN/baseline: comparable as long as they share the value's unit.
        plain, coag = _by_mode(criterion.cuts, tuple(Mode))
        note = " (no unit given: value and limits taken to share one)"
        top = max(c.grade for c in criterion.cuts)
        return _Plan(criterion, Decimal(1), None, plain, top, note, None, coag if plain != coag else None)
    if not unit.strip() and not quantity.accepts(Kind.UNITLESS):
        reason = f"no unit given: a {quantity.name} is not graded without one (a unit is never guessed)"
        return Grade(name, None, reason, None, None, finding=Finding(UNKNOWN_UNIT, f"{name}: {reason}"))
    if spec is None:
        reason = f"unit {unit!r} is not recognised for {quantity.name}; not graded (a unit is never guessed)"
        return Grade(name, None, reason, None, None, finding=Finding(UNKNOWN_UNIT, f"{name}: {reason}"))
    if spec.kind is Kind.PERCENT:
        if quantity.is_count:
            reason = "a percentage differential is not an absolute count; CTCAE grades the absolute count"
        else:
            reason = f"unit {unit!r} is a percentage, not a unit of {quantity.name}"
        return Grade(name, None, reason, None, None)
    if not quantity.accepts(spec.kind):
        reason = f"unit {unit!r} is not a unit of {quantity.name}; not graded"
        return Grade(name, None, reason, None, None, finding=Finding(UNKNOWN_UNIT, f"{name}: {reason}"))
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
    cuts, coag = _by_mode(usable, (Mode.ANY, Mode.BASELINE_NORMAL, Mode.BASELINE_ABNORMAL))
    top = max(c.grade for c in usable)
    bounds = plausible_range(name)
    plausible = uln_band = None
    if bounds is not None:
        plausible = (
            None if bounds.low is None else bounds.low / to_si,
            None if bounds.high is None else bounds.high / to_si,
        )
        uln_band = None if bounds.uln is None else (bounds.uln[0] / to_si, bounds.uln[1] / to_si)
    anticoagulated_cuts = coag if coag != cuts else None
    return _Plan(criterion, to_grading, to_si, cuts, top, note, plausible, anticoagulated_cuts, uln_band)


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
    anticoagulated: bool | None = None,
    baseline_unit: str | None = None,
    population_max: Mapping[str, Number] | None = None,
) -> Grade:
    """Grade `value` (in `unit`; LLN, ULN and baseline in the same unit) for one CTCAE term.

    `anticoagulated`: whether the subject is on anticoagulation (INR's "x baseline" criteria); unknown
    counts as not. `baseline_unit`: the baseline's own unit when it differs (a change of lab after
    baseline): the baseline is converted, exactly, or left out with a note when it cannot be.
    `population_max`: per CTCAE term, the largest value (in the term's SI unit) the trial's population can
    show; above it a value is flagged implausible like one no human can have.
    """
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
    except _Ambiguous as err:
        return _grade_readings(
            term, value, unit, err, lln, uln, baseline, baseline_abnormal, anticoagulated, baseline_unit, population_max
        )
    except _Unreadable as err:
        return Grade(name, None, str(err), None, None)
    baseline_note = ""
    if baseline_unit is not None and refs[3] is not None:
        refs, baseline_note = _baseline_in_unit(criterion, refs, baseline, baseline_unit, unit_text)
    cap = _population_cap(population_max, name)
    if plan.plausible is not None or cap is not None:
        implausible = _implausible(
            plan, value, number, refs, unit_text, anticoagulated=anticoagulated, cap=cap, population_max=population_max
        )
        if implausible is not None:
            return implausible
    given, scale = number, plan.to_grading
    if scale != 1:
        number = number * scale
        refs = tuple(None if r is None else r * scale for r in refs)
    mode, mode_note = _choose_mode(criterion, refs[1], refs[2], refs[3], baseline_abnormal)
    mode_note += baseline_note

    thresholds: list[tuple[Cut, Decimal]] = []
    missing: list[Cut] = []
    cuts = plan.cuts[mode]
    if plan.anticoagulated_cuts is not None:
        if anticoagulated is True:
            cuts = plan.anticoagulated_cuts[mode]
            mode_note += "; on anticoagulation: graded against baseline"
        else:
            mode_note += "; not on anticoagulation: fixed cut-offs, not multiples of baseline"
    for cut in cuts:
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
    needed = " and ".join(sorted({c.ref.value for c in blockers}))
    if blockers and not grade:
        return Grade(name, None, f"not gradable without {needed}{mode_note}", value_si, si_unit)
    refs_text = _refs_given(lln, uln, baseline)
    if criterion.clinical_only:
        if grade:
            text = _explain(plan, grade, winner, shown, high, "", refs_text, clinical=False)
            reason = f"at least {text}: a laboratory finding; {criterion.clinical_grades}{mode_note}"
            return Grade(name, grade, reason, value_si, si_unit, floor=True)
        return Grade(name, 0, "grade 0: within the reference limit", value_si, si_unit)
    text = _explain(plan, grade, winner, shown, high, mode_note, refs_text)
    if blockers:
        top = max(c.grade for c in blockers)
        reason = f"at least {text}; up to grade {top} possible: not gradable beyond without {needed}"
        return Grade(name, grade, reason, value_si, si_unit, floor=True)
    return Grade(name, grade, text, value_si, si_unit)


def _baseline_in_unit(
    criterion: Criterion,
    refs: tuple[Decimal | None, ...],
    baseline: Number | None,
    baseline_unit: str | None,
    unit: str,
) -> tuple[tuple[Decimal | None, ...], str]:
    """The baseline in the value's unit (exact: both sides are decimal multiples), or dropped with a note."""
    given = refs[3]
    if given is None or baseline_unit is None or units.normalise_unit(baseline_unit) == units.normalise_unit(unit):
        return refs, ""
    quantity = criterion.quantity
    in_si = units.convert(given, baseline_unit, quantity)
    one = units.convert(Decimal(1), unit, quantity)
    if in_si is None or not one:
        note = f"; baseline {baseline} {baseline_unit} cannot be compared with {unit!r}: left out"
        return (*refs[:3], None), note
    return (*refs[:3], in_si / one), f"; baseline {baseline} {baseline_unit} converted to {unit}"


def _grade_readings(
    term: str,
    value: Number,
    unit: str | None,
    err: _Ambiguous,
    lln: Number | None,
    uln: Number | None,
    baseline: Number | None,
    baseline_abnormal: bool | None,
    anticoagulated: bool | None,
    baseline_unit: str | None,
    population_max: Mapping[str, Number] | None,
) -> Grade:
    """A value with two readings gets the lowest grade both allow, as a floor, like a censored value (45,000
    platelets/uL is grade 3 or 4: at least 3, and it pages); the site is asked to send it unambiguously."""
    results = []
    for reading in err.readings:
        raw = str(value).strip()
        text = raw[: len(raw) - len(raw.lstrip("<>=≤≥ "))] + reading
        results.append(
            grade_value(
                term,
                text,
                unit,
                lln=lln,
                uln=uln,
                baseline=baseline,
                baseline_abnormal=baseline_abnormal,
                anticoagulated=anticoagulated,
                baseline_unit=baseline_unit,
                population_max=population_max,
            )
        )
    possible = [
        (reading, r)
        for reading, r in zip(err.readings, results, strict=True)
        if _possible_reading(term, unit, reading, r)
    ]
    if len(possible) == 1:
        # Only one reading is a value a body or a counter can give (fifteen hundred cells per uL, never 1.500;
        # 0.450 x10^9/L neutrophils, never 450): that is deduction, not a guess.
        reading, chosen = possible[0]
        note = f"{str(value).strip()!r} read as {reading} (the other reading is impossible)"
        return replace(chosen, reason=f"{chosen.reason}; {note}")
    shown = "; ".join(
        f"as {reading}: {r.reason if r.grade is None else ('at least ' if r.floor else '') + f'grade {r.grade}'}"
        for reading, r in zip(err.readings, results, strict=True)
    )
    name = results[0].term
    finding = Finding(AMBIGUOUS_VALUE, f"{name}: {err} ({shown})")
    grades = [r.grade for r in results]
    if any(g is None for g in grades) or not all(grades):
        return Grade(
            name, None, f"{err}; not graded (a reading is never guessed): {shown}", None, None, finding=finding
        )
    lowest = min(g for g in grades if g is not None)
    floor = len(set(grades)) > 1 or any(r.floor for r in results)
    reason = f"{'at least ' if floor else ''}grade {lowest}: {err}; {shown}"
    return Grade(name, lowest, reason, None, None, floor=floor, finding=finding)


def _possible_reading(term: str, unit: str | None, reading: str, graded: Grade) -> bool:
    """False for a reading no lab can report: implausible for the analyte, or decimals on cells per uL."""
    if graded.finding is not None and graded.finding.code == IMPLAUSIBLE_VALUE:
        return False
    criterion = find_criterion(term)
    if criterion is None or not criterion.quantity.is_count:
        return True
    spec = units.parse_unit_for(unit or "", criterion.quantity)
    return spec is None or spec.factor >= 1 or "." not in reading  # cells per uL are counted, never fractions


def _population_cap(population_max: Mapping[str, Number] | None, term: str) -> Decimal | None:
    if not population_max:
        return None
    key = fold(term)
    for name, amount in population_max.items():
        if fold(name) == key:
            return _to_decimal(amount, "population maximum")
    return None


def _implausible(
    plan: _Plan,
    value: Number,
    number: Decimal,
    refs: tuple[Decimal | None, ...],
    unit: str,
    *,
    anticoagulated: bool | None,
    cap: Decimal | None,
    population_max: Mapping[str, Number] | None,
) -> Grade | None:
    """A value (or limit) no body can have in its stated unit (or none in this trial's population, `cap`):
    not graded, with the unit likely meant."""
    name = plan.criterion.term
    if plan.to_si is None:
        return None
    low, high = plan.plausible or (None, None)
    if cap is not None:
        high = cap / plan.to_si if high is None else min(high, cap / plan.to_si)
    named = (("value", number), ("LLN", refs[1]), ("ULN", refs[2]), ("baseline", refs[3]))
    band = plan.uln_band
    for _, a in named:
        if a is not None and ((low is not None and a < low) or (high is not None and a > high)):
            break
    else:
        uln = refs[2]
        if band is None or uln is None or band[0] <= uln <= band[1]:
            return None  # the common case, decided without converting anything
    bounds = plausible_range(name) or Plausible(None, None, ())
    population = cap is not None and (bounds.high is None or cap < bounds.high)
    if population:
        bounds = replace(bounds, high=cap)
    where = "in this trial's population" if population else "physiologically"
    si_unit = plan.criterion.quantity.si_unit
    for what, amount in named:
        if amount is None:
            continue
        holds: Callable[[Decimal], bool] = bounds.holds
        if holds(amount * plan.to_si):
            if what != "ULN" or bounds.uln is None or bounds.uln_holds(amount * plan.to_si):
                continue
            # A possible value, but not where any lab puts its upper reference limit.
            holds, (lo, hi) = bounds.uln_holds, bounds.uln
            seen = f"ULN {amount} {unit} is outside where a lab's upper reference limit sits ({lo} to {hi} {si_unit})"
        else:
            shown = f"{value if what == 'value' else amount} {unit}".rstrip()
            seen = f"{what} {shown} is outside what is possible {where} ({bounds.describe(si_unit)})"
        likely = [
            alternative
            for alternative in bounds.alternatives
            if units.normalise_unit(alternative) != units.normalise_unit(unit)
            and (in_si := units.convert(amount, alternative, plan.criterion.quantity)) is not None
            and holds(in_si)
        ]
        if not likely:
            detail = f"{name}: {seen}; no unit we know makes it plausible"
        else:
            meant = " or ".join(likely)
            detail = f"{name}: {seen}; likely {meant} was meant"
            if what == "value":
                detail += _graded_as(
                    plan, value, unit, likely, refs, anticoagulated=anticoagulated, population_max=population_max
                )
        reason = f"implausible: {detail.removeprefix(name + ': ')}; not graded as given"
        return Grade(name, None, reason, None, None, finding=Finding(IMPLAUSIBLE_VALUE, detail))
    return None


def _graded_as(
    plan: _Plan,
    value: Number,
    unit: str,
    likely: list[str],
    refs: tuple[Decimal | None, ...],
    *,
    anticoagulated: bool | None,
    population_max: Mapping[str, Number] | None,
) -> str:
    """What the value would grade in each likely unit (limits read in the unit given, converted): the
    safety officer must hear of a grade 4 hidden behind a unit slip."""
    quantity = plan.criterion.quantity
    given = units.convert(Decimal(1), unit, quantity)
    parts = []
    for alternative in likely:
        target = units.convert(Decimal(1), alternative, quantity)
        if given is None or not target:
            continue
        ratio = given / target
        moved = [None if r is None else r * ratio for r in refs]
        graded = grade_value(
            plan.criterion.term,
            value,
            alternative,
            lln=moved[1],
            uln=moved[2],
            baseline=moved[3],
            anticoagulated=anticoagulated,
            population_max=population_max,
        )
        if graded.grade is not None:
            at_least = "at least " if graded.floor else ""
            parts.append(f"as {alternative}: {at_least}grade {graded.grade}")
    return f" ({'; '.join(parts)})" if parts else ""


def _refs_given(lln: object, uln: object, baseline: object) -> str:
    parts = [f"{n} {v}" for n, v in (("LLN", lln), ("ULN", uln), ("baseline", baseline)) if v not in (None, "")]
    return ", ".join(parts)


def _explain(
    plan: _Plan,
    grade: int,
    winner: Cut | None,
    shown: str,
    high: bool,
    mode_note: str,
    refs: str,
    *,
    clinical: bool = True,
) -> str:
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
    if clinical and grade == plan.top_grade and plan.criterion.clinical_grades:
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
    """A censored result ("<0.2") gets the grade every value it allows shares; when they differ, the lowest of
    them as a floor ("<1.0" neutrophils: at least grade 3), unless that lowest is grade 0."""
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
    lowest, highest = min(grades), max(grades)
    clinical = plan.criterion.clinical_only
    unresolved = sorted({c.ref.value for c in missing if c.grade > lowest})
    if len(grades) == 1 and not unresolved and not clinical:
        return Grade(name, lowest, f"grade {lowest}: every value {shown} is grade {lowest}", None, None)
    if lowest:
        reason = f"at least grade {lowest}: every value {shown} is grade {lowest} or worse"
        if highest > lowest:
            reason += f" (up to grade {highest})"
        if unresolved:
            reason += f"; higher grades need {' and '.join(unresolved)}"
        if clinical:
            reason += f"; a laboratory finding; {plan.criterion.clinical_grades}"
        return Grade(name, lowest, reason, None, None, floor=True)
    if unresolved:
        needed = " and ".join(unresolved)
        return Grade(name, None, f"censored value {shown} is not gradable without {needed}", None, None)
    if clinical:
        return Grade(name, None, f"censored value {shown}: {plan.criterion.clinical_grades}", None, None)
    return Grade(name, None, f"censored value {shown} could be grade {lowest} to {highest}", None, None)


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
    anticoagulated: bool | None = None,
    baseline_unit: str | None = None,
    population_max: Mapping[str, Number] | None = None,
) -> list[Grade]:
    """Grade a test (CDISC LBTESTCD or LOINC) for every term it grades; an unknown test gives one reason."""
    terms = terms_for_test(test)
    if not terms:
        return [Grade(test, None, f"test {test!r} grades no CTCAE term (unknown LBTESTCD or LOINC)", None, None)]
    return [
        grade_value(
            term,
            value,
            unit,
            lln=lln,
            uln=uln,
            baseline=baseline,
            baseline_abnormal=baseline_abnormal,
            anticoagulated=anticoagulated,
            baseline_unit=baseline_unit,
            population_max=population_max,
        )
        for term in terms
    ]
