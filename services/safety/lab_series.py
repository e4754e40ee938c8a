"""Pure: a subject's blood counts as series in CTCAE's own unit, with the grade bands and the baseline,
so a page can draw the trend against the lines that decide a grade (the console plots these).

Values are converted with the same CTCAE plan that grades them; a censored result ("<0.2") is drawn at its
bound and marked as such. Retracted results (entered in error, deleted) are left out by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from services.safety.ctcae import grade_value, terms_for_test
from services.safety.ctcae.criteria import Ref, find_criterion
from services.safety.models import LabResult

SERIES: tuple[tuple[str, str], ...] = (
    ("neutrophils", "Neutrophil count decreased"),
    ("platelets", "Platelet count decreased"),
    ("haemoglobin", "Anemia"),
)


@dataclass(frozen=True)
class SeriesPoint:
    result_id: str
    collected_at: datetime
    value: Decimal
    censored: str | None
    """'<' or '>' when the site reported a bound, not a value."""
    grade: int | None
    baseline: bool


@dataclass(frozen=True)
class GradeBand:
    grade: int
    below: Decimal
    """Values under this (in the series' unit) are at least this grade."""


@dataclass(frozen=True)
class LabSeries:
    name: str
    term: str
    unit: str
    points: list[SeriesPoint]
    bands: list[GradeBand]
    baseline: Decimal | None


def _number(text: str) -> tuple[str, str | None]:
    stripped = text.strip()
    for mark in ("<=", ">=", "<", ">"):
        if stripped.startswith(mark):
            return stripped[len(mark) :].strip(), mark[0]
    return stripped, None


def _to_unit(term: str, raw: str | None, unit: str | None) -> Decimal | None:
    if raw is None:
        return None
    graded = grade_value(term, raw, unit)
    return graded.value_si


def _belongs(lab: LabResult, term: str) -> bool:
    code = lab.test or lab.loinc
    return code is not None and term in terms_for_test(code)


def lab_series(labs: Sequence[LabResult]) -> list[LabSeries]:
    """Neutrophils, platelets and haemoglobin, each in the unit CTCAE grades it in, oldest result first."""
    found = []
    for name, term in SERIES:
        criterion = find_criterion(term)
        if criterion is None:  # pragma: no cover - the three terms are in the shipped CTCAE table
            continue
        quantity = criterion.quantity
        points: list[SeriesPoint] = []
        llns: list[Decimal] = []
        for lab in sorted((x for x in labs if _belongs(x, term)), key=lambda x: x.collected_at):
            number, censored = _number(lab.value)
            try:
                Decimal(number)
            except InvalidOperation:
                continue
            value = _to_unit(term, number, lab.unit)
            if value is None:
                continue
            points.append(SeriesPoint(lab.result_id, lab.collected_at, value, censored, lab.grade, lab.baseline))
            lln = _to_unit(term, lab.lln, lab.unit)
            if lln is not None:
                llns.append(lln)
        bands = [
            GradeBand(cut.grade, cut.amount * quantity.si_scale)
            for cut in criterion.cuts
            if cut.ref is Ref.ABS and cut.kind is quantity.si_kind
        ]
        if llns:
            bands.append(GradeBand(1, llns[-1]))  # grade 1 starts under the lower limit of normal
        baselines = [p.value for p in points if p.baseline]
        found.append(
            LabSeries(
                name=name,
                term=term,
                unit=quantity.si_unit,
                points=points,
                bands=sorted(bands, key=lambda b: b.grade),
                baseline=baselines[-1] if baselines else None,
            )
        )
    return found
