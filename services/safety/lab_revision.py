"""Pure: whether the site's correction of a lab result changes what an alert shows of it.

A correction that leaves the result at its term's grade pages nobody, but the alert showing it must not go on
showing what the site replaced: a platelet count of 10 corrected to 22 (both grade 4) decides whether to give a
prophylactic transfusion. What an alert shows of a result: its value (as a quantity), collection time and test.
A unit written another way for the same quantity (10 10^9/L re-sent as 10 10^3/uL, 10 as 10.0) is no revision:
nothing shown is wrong, and the officer would be told of a change that is none.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from services.safety.ctcae.units import Kind, parse_unit
from services.safety.models import LabResult

_COMPARATORS = "<>=≤≥ "
"""What a censored value ("<1.0", ">= 1000") starts with: part of what it says, kept apart from its number."""


def revises_shown(before: Mapping[str, object], lab: LabResult) -> bool:
    """Whether a correction changed what an alert shows of `lab` (the row as corrected). `before`: the stored fields
    the correction changed, as they were (`store.Saved.before`); a field absent from it is unchanged."""
    if "collected_at" in before:
        return True
    old_test = before.get("test", lab.test) or before.get("loinc", lab.loinc)
    if old_test != (lab.test or lab.loinc):
        return True
    old_value, old_unit = before.get("value", lab.value), before.get("unit", lab.unit)
    if not isinstance(old_value, str) or not (old_unit is None or isinstance(old_unit, str)):
        return True  # not a stored value as a row holds one: say it changed rather than keep showing it
    return not same_quantity(old_value, old_unit, lab.value, lab.unit)


def same_quantity(old_value: str, old_unit: str | None, new_value: str, new_unit: str | None) -> bool:
    """Whether two reported values say the same: equal as written, or equal in their unit's base unit (a cell count
    in 10^9/L), with the same comparator when censored. A unit that is not known is compared as written."""
    if (old_value.strip(), old_unit or "") == (new_value.strip(), new_unit or ""):
        return True
    old, new = _in_base_unit(old_value, old_unit), _in_base_unit(new_value, new_unit)
    return old is not None and old == new


def _in_base_unit(value: str, unit: str | None) -> tuple[str, Kind, Decimal] | None:
    text = value.strip()
    number = text.lstrip(_COMPARATORS)
    comparator = text[: len(text) - len(number)].replace(" ", "")
    spec = parse_unit(unit or "")
    try:
        amount = Decimal(number)
    except InvalidOperation:
        return None
    if spec is None or not amount.is_finite():
        return None
    return comparator, spec.kind, amount * spec.factor
