"""Pure: was the subject eligible when first dosed? Screening labs, CAR-T timing and history against the protocol.

Judged at the first infusion, because that is when an ineligible subject is put at risk: a subject screened and
never dosed raises nothing. The verdict is `not_eligible` when any criterion shows it (whatever else is missing),
`data_missing` when the data to judge a required criterion is absent or unreadable, else `eligible`. A value that
cannot be read safely (no unit, an unknown unit, an x ULN rule without a ULN, a censored value that straddles the
limit) counts as missing, never as passing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

from services.safety.ctcae.grading import parse_result
from services.safety.ctcae.units import normalise_unit, parse_unit
from shared.clock import utc
from shared.events import ScreeningHistory
from shared.protocol import EligibilityRules, HistoryExclusion, LabOperator, ScreeningLab

EligibilityStatus = Literal["eligible", "not_eligible", "data_missing"]
DOSED_WHILE_INELIGIBLE = "dosed_while_ineligible"
SCREENING_DATA_MISSING = "screening_data_missing"


@dataclass(frozen=True, slots=True)
class LabReading:
    """An active lab result as stored (value as text, possibly censored: "<0.1")."""

    test: str | None
    loinc: str | None
    value: str
    unit: str | None
    uln: str | None
    collected_at: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    status: EligibilityStatus
    failed: tuple[str, ...] = ()
    """Why the subject was not eligible, one line per criterion."""
    missing: tuple[str, ...] = ()
    """What could not be judged, one line per criterion."""

    @property
    def deviation_kind(self) -> str | None:
        return {"not_eligible": DOSED_WHILE_INELIGIBLE, "data_missing": SCREENING_DATA_MISSING}.get(self.status)

    def detail(self) -> str:
        parts = []
        if self.failed:
            parts.append("not eligible: " + "; ".join(self.failed))
        if self.missing:
            parts.append("screening data missing: " + "; ".join(self.missing))
        return " | ".join(parts) or "eligible"


def judge(
    rules: EligibilityRules,
    *,
    first_dose_at: datetime,
    first_dose_on: date,
    car_t_infused_on: date | None,
    history: Sequence[ScreeningHistory],
    labs: Sequence[LabReading],
) -> Verdict:
    """The eligibility verdict at the first infusion (`first_dose_on`: its date at the site)."""
    failed: list[str] = []
    missing: list[str] = []
    since = utc(first_dose_at) - timedelta(days=rules.screening_window_days)
    screening = [lab for lab in labs if since <= utc(lab.collected_at) <= utc(first_dose_at)]
    window = f"within {rules.screening_window_days} days before the first infusion"

    if rules.cytopenia_any:
        _inclusion(rules, screening, car_t_infused_on, window, failed, missing)
    for criterion in rules.exclude_labs:
        reading = _latest(criterion, screening)
        if reading is None:
            if criterion.required:
                missing.append(f"no {_tests(criterion)} result {window} ({criterion.name})")
            continue
        met, shown = _meets(criterion, reading)
        if met is None:
            missing.append(f"{criterion.name}: cannot judge {shown}")
        elif met:
            failed.append(f"exclusion {criterion.name}: {shown} on {_day(reading)}")
    for item in rules.history:
        _history(item, history, first_dose_on, failed, missing)
    if failed:
        return Verdict("not_eligible", tuple(failed), tuple(missing))
    if missing:
        return Verdict("data_missing", (), tuple(missing))
    return Verdict("eligible")


def _inclusion(
    rules: EligibilityRules,
    screening: Sequence[LabReading],
    car_t_infused_on: date | None,
    window: str,
    failed: list[str],
    missing: list[str],
) -> None:
    """Severe cytopenia: any one criterion met, on a count taken late enough after the CAR-T infusion."""
    if rules.car_t_min_days is not None and car_t_infused_on is None:
        missing.append("car_t_infused_on not reported: cytopenia after CAR-T cannot be timed")
        return
    earliest = None
    if car_t_infused_on is not None and rules.car_t_min_days is not None:
        earliest = car_t_infused_on + timedelta(days=rules.car_t_min_days)
    seen: list[str] = []
    unknown: list[str] = []
    for criterion in rules.cytopenia_any:
        reading = _latest(criterion, screening)
        if reading is None:
            unknown.append(f"no {_tests(criterion)} result {window}")
            continue
        met, shown = _meets(criterion, reading)
        if met is None:
            unknown.append(f"{criterion.name}: cannot judge {shown}")
        elif met and earliest is not None and _site_day(reading) < earliest:
            seen.append(f"{shown} on {_day(reading)}, before day {rules.car_t_min_days} after CAR-T ({earliest})")
        elif met:
            return  # included
        else:
            seen.append(f"{shown} (needs {criterion.name})")
    if unknown:
        missing.append("severe cytopenia not shown: " + ", ".join(unknown + seen))
    else:
        failed.append("inclusion severe cytopenia after CAR-T not met: " + ", ".join(seen))


def _history(
    item: HistoryExclusion,
    history: Sequence[ScreeningHistory],
    first_dose_on: date,
    failed: list[str],
    missing: list[str],
) -> None:
    entry = next((h for h in history if h.code == item.code), None)
    if entry is not None and entry.last_on is not None:
        days = (first_dose_on - entry.last_on).days
        if 0 <= days <= item.within_days:
            failed.append(f"exclusion {item.label}: last on {entry.last_on}, {days} days before the first infusion")
            return
    if entry is not None and entry.answer:
        failed.append(f"exclusion {item.label}: answered yes on the enrolment form")
        return
    if (entry is None or (entry.answer is None and entry.last_on is None)) and item.required:
        missing.append(f"{item.label}: not answered on the enrolment form")


def _latest(criterion: ScreeningLab, labs: Sequence[LabReading]) -> LabReading | None:
    codes = {t.casefold() for t in criterion.tests}
    matching = [lab for lab in labs if (lab.test or "").casefold() in codes or (lab.loinc or "").casefold() in codes]
    return max(matching, key=lambda lab: utc(lab.collected_at), default=None)


def _meets(criterion: ScreeningLab, reading: LabReading) -> tuple[bool | None, str]:
    """Whether the reading meets the criterion (None: cannot tell), and the reading as the officer reads it."""
    unit = reading.unit or ""
    shown = f"{_tests(criterion)} {reading.value} {unit}".strip()
    try:
        operator, number = parse_result(reading.value)
    except ValueError:
        return None, f"{shown} (not a number)"
    if criterion.of_uln:
        uln = _decimal(reading.uln)
        if uln is None or uln <= 0:
            return None, f"{shown} (no ULN given)"
        ratio = number / uln
        return _holds(criterion.operator, criterion.limit, operator, ratio), f"{shown} = {ratio:.2f} x ULN {uln}"
    assert criterion.unit is not None  # the protocol model requires a unit or of_uln
    value = _in_unit(number, reading.unit, criterion.unit)
    if value is None:
        return None, f"{shown} (unit {'missing' if not reading.unit else 'not convertible to ' + criterion.unit})"
    if normalise_unit(unit) != normalise_unit(criterion.unit):
        shown += f" = {value.normalize():f} {criterion.unit}"
    return _holds(criterion.operator, criterion.limit, operator, value), shown


def _in_unit(value: Decimal, unit: str | None, target: str) -> Decimal | None:
    if not unit:
        return None
    if normalise_unit(unit) == normalise_unit(target):
        return value
    given, wanted = parse_unit(unit), parse_unit(target)
    if given is None or wanted is None or given.kind != wanted.kind:
        return None
    return value * given.factor / wanted.factor


def _holds(op: LabOperator, limit: Decimal, reading_op: str, x: Decimal) -> bool | None:
    """`value op limit` for a value known exactly (reading_op "") or only bounded ("<x", ">=x"...).

    True or False when every value the reading allows gives that answer, None when they disagree.
    """
    if not reading_op:
        return {"<": x < limit, "<=": x <= limit, ">": x > limit, ">=": x >= limit}[op]
    if reading_op.startswith(">"):  # mirror: a lower bound is an upper bound of the negated value
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
        return _holds(flip[op], -limit, flip[reading_op], -x)  # type: ignore[arg-type]
    strict_reading = reading_op == "<"
    strict_limit = op in ("<", ">")
    if op in ("<", "<="):  # the value is at most x: all of it below the limit?
        return True if x < limit or (x == limit and (strict_reading or not strict_limit)) else None
    return False if x < limit or (x == limit and (strict_reading or strict_limit)) else None


def _decimal(text: str | None) -> Decimal | None:
    if text is None or not text.strip():
        return None
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        return None


def _tests(criterion: ScreeningLab) -> str:
    return criterion.tests[0]


def _site_day(reading: LabReading) -> date:
    return reading.collected_at.date()


def _day(reading: LabReading) -> str:
    return _site_day(reading).isoformat()
