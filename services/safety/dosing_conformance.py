"""Pure: one infusion against its arm: cells/kg, number of infusions, interval from the previous one, premedication.

Each finding is a protocol deviation. An overdose (above the tolerance) and an infusion beyond the arm's number put
the subject at risk and page; an under-dose, a repeat outside its window and a premedication not as planned are
mailed for review. Checks run only on what the dose carries: a figure not sent is not a finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from shared.clock import utc
from shared.events import PremedicationGiven
from shared.protocol import Arm, DosingRules

DOSE_OUT_OF_TOLERANCE = "dose_out_of_tolerance"
EXTRA_INFUSION = "extra_infusion"
INTERVAL_OUT_OF_WINDOW = "interval_out_of_window"
PREMEDICATION_NOT_AS_PLANNED = "premedication_not_as_planned"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    detail: str
    pages: bool


@dataclass(frozen=True, slots=True)
class GivenDose:
    """An infusion on record (active): its id, the instant, and its date at the site."""

    dose_id: str
    administered_at: datetime
    administered_on: date


@dataclass(frozen=True, slots=True)
class DoseFacts:
    dose_id: str
    number: int
    administered_at: datetime
    administered_on: date
    cells_per_kg: Decimal | None
    total_cells: Decimal | None
    weight_kg: Decimal | None
    premedication: Sequence[PremedicationGiven] | None


def check_dose(rules: DosingRules, arm: Arm, dose: DoseFacts, *, others: Sequence[GivenDose]) -> list[Finding]:
    """Findings for `dose` given the subject's other active infusions (`others`, without this one)."""
    findings = _cells_per_kg(rules, arm, dose)
    earlier = sorted(
        (d for d in others if d.dose_id != dose.dose_id and utc(d.administered_at) < utc(dose.administered_at)),
        key=lambda d: utc(d.administered_at),
    )
    ordinal = len(earlier) + 1
    if ordinal > arm.infusions or dose.number > arm.infusions:
        findings.append(
            Finding(
                EXTRA_INFUSION,
                f"infusion {max(ordinal, dose.number)} on {dose.administered_on} (dose {dose.dose_id}): arm {arm.id} "
                f"plans {arm.infusions} infusion(s)",
                pages=True,
            )
        )
    elif arm.interval_days is not None:
        # The gap before this infusion, and the one after it when an earlier infusion arrives late (out of order).
        later = sorted(
            (d for d in others if d.dose_id != dose.dose_id and utc(d.administered_at) > utc(dose.administered_at)),
            key=lambda d: utc(d.administered_at),
        )
        this = GivenDose(dose.dose_id, dose.administered_at, dose.administered_on)
        pairs = ([(earlier[-1], this, ordinal)] if earlier else []) + ([(this, later[0], ordinal + 1)] if later else [])
        for before, after, number in pairs:
            days = (after.administered_on - before.administered_on).days
            if abs(days - arm.interval_days) > rules.interval_window_days:
                findings.append(
                    Finding(
                        INTERVAL_OUT_OF_WINDOW,
                        f"infusion {number} on {after.administered_on} came {days} days after the previous one "
                        f"({before.administered_on}); arm {arm.id} plans every {arm.interval_days} days "
                        f"+/- {rules.interval_window_days}",
                        pages=False,
                    )
                )
    if rules.premedication is not None and dose.premedication is not None:
        findings += _premedication(rules, dose)
    return findings


def _cells_per_kg(rules: DosingRules, arm: Arm, dose: DoseFacts) -> list[Finding]:
    """The dose as sent, and as total cells / weight: either one outside the tolerance is a finding."""
    figures: list[tuple[Decimal, str]] = []
    if dose.cells_per_kg is not None:
        figures.append((dose.cells_per_kg, "as reported"))
    if dose.total_cells is not None and dose.weight_kg is not None:
        figures.append(
            (dose.total_cells / dose.weight_kg, f"computed from {dose.total_cells:.3e} cells / {dose.weight_kg} kg")
        )
    share = rules.cells_per_kg_tolerance_percent / 100
    low, high = arm.cells_per_kg * (1 - share), arm.cells_per_kg * (1 + share)
    for value, basis in figures:
        if low <= value <= high:
            continue
        over = value > high
        return [
            Finding(
                DOSE_OUT_OF_TOLERANCE,
                f"{'overdose' if over else 'under-dose'}: {value:.3e} cells/kg {basis} (dose {dose.dose_id}); arm "
                f"{arm.id} gives {arm.cells_per_kg:.1e} +/- {rules.cells_per_kg_tolerance_percent}% "
                f"({low:.3e} to {high:.3e})",
                pages=over,
            )
        ]
    return []


def _premedication(rules: DosingRules, dose: DoseFacts) -> list[Finding]:
    plan = rules.premedication
    assert plan is not None
    given = [p for p in dose.premedication or () if p.drug.strip().casefold() == plan.drug.casefold()]
    wanted = f"{plan.drug} {plan.dose_mg} mg {plan.minutes_before} min (+/- {plan.window_minutes}) before the infusion"
    if not given:
        return [_premed(f"no {plan.drug} recorded for dose {dose.dose_id}; the protocol gives {wanted}")]
    problems: list[str] = []
    for item in given:
        these = []
        if item.dose_mg is not None and item.dose_mg != plan.dose_mg:
            these.append(f"{item.dose_mg} mg")
        if item.given_at is not None:
            minutes = (utc(dose.administered_at) - utc(item.given_at)).total_seconds() / 60
            if abs(minutes - plan.minutes_before) > plan.window_minutes:
                these.append(f"given {minutes:.0f} min before" if minutes >= 0 else f"given {-minutes:.0f} min after")
        if not these:
            return []  # one administration as planned is enough
        problems += these
    return [_premed(f"{plan.drug} {', '.join(problems)} for dose {dose.dose_id}; the protocol gives {wanted}")]


def _premed(detail: str) -> Finding:
    return Finding(PREMEDICATION_NOT_AS_PLANNED, detail, pages=False)
