"""Pure: the numbers a clinical record can plausibly carry, so that nothing ingest accepts makes safety fail.

A lab value, LLN or ULN of `1e999999` parses as a Decimal but overflows safety's arithmetic (the event is
then dead-lettered after the sender was told 202). Ingest refuses such numbers up front with a 422 naming the
field. The bounds are far beyond any real measurement in any unit (a count per litre is below 1e15) and match
the 20 significant digits CTCAE grading keeps exact (with at most 35 decimal places, so 1e-999999 is out too).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import Any, get_args

from pydantic import BaseModel

from shared.events import LabData

MAX_MAGNITUDE = Decimal("1e15")
MAX_SIGNIFICANT_DIGITS = 20
MAX_DECIMAL_PLACES = 35
_MAX_ADJUSTED = MAX_MAGNITUDE.adjusted()
"""A non-zero number reaches MAX_MAGNITUDE exactly when its leading digit's exponent is at least this."""
_CENSOR = re.compile(r"^\s*(?:<=|>=|<|>|≤|≥)?\s*")


def number_problem(value: Decimal) -> str | None:
    """Why this number cannot be a clinical measurement, or None when it can."""
    if not value.is_finite():
        return "must be a finite number"
    if value and value.adjusted() >= _MAX_ADJUSTED:  # |value| >= 1e15, without building abs(value) (every number)
        return f"out of range: the magnitude must be below {MAX_MAGNITUDE:.0E}"
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if -exponent > MAX_DECIMAL_PLACES:  # 1e-40, or a zero written 0E-999999
        return f"too precise: at most {MAX_DECIMAL_PLACES} decimal places"
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        return f"too precise: at most {MAX_SIGNIFICANT_DIGITS} significant digits"
    return None


@lru_cache(maxsize=4096)  # by the text (40 characters at most): values recur; parsing each cost 2% of a 100-event post
def _lab_value_problem(text: str) -> str | None:
    value = _lab_value(text)
    return None if value is None else number_problem(value)


def _lab_value(text: str) -> Decimal | None:
    """The number in a lab result's text (`12.5`, `<0.2`), or None for text such as `NEG`."""
    try:
        return Decimal(_CENSOR.sub("", text, count=1).strip())
    except InvalidOperation:
        return None


@cache
def _number_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` that may hold a Decimal (looked up once per model, not on every event)."""
    return tuple(name for name, info in model.model_fields.items() if _may_hold_decimal(info.annotation))


def _may_hold_decimal(annotation: Any) -> bool:
    if annotation is Decimal or annotation is Any or annotation is object:
        return True
    return any(_may_hold_decimal(arg) for arg in get_args(annotation) if isinstance(arg, type) or get_args(arg))


def out_of_bounds(data: BaseModel) -> list[dict[str, Any]]:
    """Pydantic-style errors (`loc` relative to the event) for every number of `data` out of bounds."""
    errors: list[dict[str, Any]] = []
    if isinstance(data, LabData):
        problem = _lab_value_problem(data.value)
        if problem is not None:
            errors.append({"loc": ("data", "value"), "msg": problem})
    for name in _number_fields(type(data)):
        value = getattr(data, name)
        if isinstance(value, Decimal) and (problem := number_problem(value)) is not None:
            errors.append({"loc": ("data", name), "msg": problem})
    return errors
