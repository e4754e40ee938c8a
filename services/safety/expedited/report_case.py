"""Pure: everything a report draft (narrative, CIOMS I, E2B(R3)) says about one AE at one version.

The loader (`expedited.loading`) reads it from safety's tables; the renderers only format it. A value the
data does not have stays None, and each renderer marks it as a blank rather than inventing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from services.safety.sae import FATAL_OUTCOMES


@dataclass(frozen=True)
class DoseLine:
    number: int
    administered_at: datetime
    administered_on: date | None
    cells_per_kg: str | None


@dataclass(frozen=True)
class LabLine:
    collected_at: datetime
    test: str
    value: str
    unit: str | None
    lln: str | None
    uln: str | None
    term: str | None
    grade: int | None
    baseline: bool


@dataclass(frozen=True)
class VersionLine:
    """One AE version as the site sent it: the course of the event."""

    version: int
    received_at: datetime
    grade: int | None
    outcome: str | None
    criteria: tuple[str, ...]
    relatedness: str | None


@dataclass(frozen=True)
class ReportCase:
    # trial and product
    trial_id: str
    trial_title: str
    product: str
    route: str | None
    indication: str | None
    sender_organisation: str
    country: str | None
    rsi_document: str
    rsi_version: str
    rsi_date: date
    # the case and this report
    case_id: str
    report_version: int
    ae_version: int
    latest_ae_version: int
    first_received_at: datetime
    """When the sponsor first received the case as serious (E2B C.1.4, CIOMS 24c)."""
    latest_received_at: datetime
    """When the sponsor received this version (E2B C.1.5)."""
    # subject
    subject_id: str
    site_id: str
    arm: str | None
    arm_label: str | None
    arm_cells_per_kg: str | None
    enrolled_at: date | None
    # event
    reported_term: str
    term: str
    meddra_code: str | None
    grade: int | None
    criteria: tuple[str, ...]
    onset: str | None
    end: str | None
    outcome: str | None
    site_relatedness: str | None
    awareness_at: datetime | None
    course: tuple[VersionLine, ...]
    doses: tuple[DoseLine, ...]
    labs: tuple[LabLine, ...]
    # sponsor assessments
    sponsor_causality: str | None
    causality_by: str | None
    causality_reason: str | None
    expectedness: str
    expectedness_basis: str
    expectedness_reason: str
    susar: bool
    clock_start: datetime | None
    edited_narrative: str | None

    @property
    def follow_up(self) -> bool:
        return self.report_version > 1

    @property
    def fatal(self) -> bool:
        return "death" in self.criteria or (self.outcome or "").strip().lower() in FATAL_OUTCOMES

    @property
    def first_dose(self) -> DoseLine | None:
        return self.doses[0] if self.doses else None

    @property
    def last_dose(self) -> DoseLine | None:
        return self.doses[-1] if self.doses else None

    def study_day(self, on: date) -> int | None:
        """Study day of a date: day 1 is the first infusion's date at the site."""
        first = self.first_dose
        if first is None:
            return None
        start = first.administered_on or first.administered_at.date()
        delta = (on - start).days
        return delta + 1 if delta >= 0 else delta


def onset_date(onset: str | None) -> date | None:
    """A full onset date, or None when the site gave only a year or a month."""
    if onset is None or len(onset) != 10:
        return None
    return date.fromisoformat(onset)
