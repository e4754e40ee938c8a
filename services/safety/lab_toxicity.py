"""Pure: grade a lab result by CTCAE v5.0 and decide whether it is news for the safety officer.

Subjects in cytopenia trials enter with grade 3-4 counts: a result pages only when it reaches the
protocol's threshold *and* is worse than the subject's own baseline grade for that term, and again only
when it gets worse still. A floor grade ("at least 3": a limit missing, a censored value) counts as its
floor, so an acute kidney injury reported without a ULN still pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.safety.ctcae import IMPLAUSIBLE_VALUE, Finding, Grade, grade_test, worst_grade
from shared.events import LabData

RANGE_MISFIT = "UNIT_RANGE_MISMATCH"
"""Ingest's flag: the lab's own reference range is impossible in the stated unit (HL7's "g/dL" on mmol/L)."""


@dataclass(frozen=True)
class LabDecision:
    graded: Grade
    signal: bool
    baseline_grade: int | None
    previous_grade: int | None


def lab_test_code(data: LabData) -> str:
    """The LBTESTCD when the sender gave one, else the LOINC code (the events model requires one of them)."""
    return data.test or data.loinc or ""


def grade_lab(
    data: LabData,
    *,
    baseline_value: str | None = None,
    baseline_unit: str | None = None,
    population_max: Mapping[str, Decimal] | None = None,
) -> Grade:
    """Grade a result against the subject's baseline value (in `baseline_unit` when that differs), flagging
    values beyond what the trial's population can show (`population_max`, from the protocol)."""
    results = grade_test(
        lab_test_code(data),
        data.value,
        data.unit,
        lln=data.lln,
        uln=data.uln,
        baseline=baseline_value,
        anticoagulated=data.anticoagulated,
        baseline_unit=baseline_unit,
        population_max=population_max,
    )
    graded = worst_grade(results)
    if graded is None:  # grade_test always returns at least one result; keep the type honest
        return Grade(lab_test_code(data), None, "no CTCAE term graded", None, None)
    if RANGE_MISFIT in data.flags and graded.finding is None:
        # The value and its range disagree about the unit: whichever is wrong, the grade would be.
        detail = (
            f"{graded.term}: the reference range ({data.lln} to {data.uln}) is not possible in unit "
            f"{data.unit!r}; the value {data.value} may be in another unit"
        )
        reason = f"implausible: {detail.removeprefix(graded.term + ': ')}; not graded as given"
        return Grade(graded.term, None, reason, None, None, finding=Finding(IMPLAUSIBLE_VALUE, detail))
    return graded


def lab_findings(
    data: LabData, *, population_max: Mapping[str, Decimal] | None = None, graded: Grade | None = None
) -> list[Finding]:
    """Data-quality findings on the record's own fields (unit, plausibility of value and range) for the site.

    `graded`: `grade_lab(data, population_max=population_max)` when the caller has it already."""
    if graded is None:
        graded = grade_lab(data, population_max=population_max)
    return [graded.finding] if graded.finding is not None else []


def decide(
    graded: Grade, *, is_baseline: bool, threshold: int, baseline_grade: int | None, signalled_grade: int | None
) -> LabDecision:
    """Baseline results set the reference and never page; others page when at threshold and newly worse."""
    grade = graded.grade
    news = (
        not is_baseline
        and grade is not None
        and grade >= threshold
        and grade > (baseline_grade or 0)
        and grade > (signalled_grade or 0)
    )
    return LabDecision(graded=graded, signal=news, baseline_grade=baseline_grade, previous_grade=signalled_grade)
