"""Queries on safety's tables. Keyword-only; never commit (the consumer's transaction does)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlmodel import Session, SQLModel, col, select

from services.safety.batch_records import BatchRecords
from services.safety.ctcae import Grade
from services.safety.dlt_window import site_date
from services.safety.models import (
    AeSeriousness,
    AeVersion,
    CohortState,
    DltRecord,
    Dose,
    LabResult,
    LabTermState,
    MissedAssessment,
    RecordStatus,
    Subject,
)
from services.safety.sae import SaeState, site_entry_time
from shared.clock import utc
from shared.events import (
    AeReported,
    AwarenessBasis,
    DoseAdministered,
    LabResulted,
    RecordStatusChanged,
    SubjectEnrolled,
)
from shared.rows import new_row

INACTIVE = frozenset({"entered_in_error", "deleted"})
"""Statuses that take a record out of every rule; 'restored' brings it back."""


def upsert_subject(records: BatchRecords, *, envelope: SubjectEnrolled) -> Subject:
    subject = records.subject(envelope.subject)
    if subject is None:
        subject = new_row(Subject, trial_id=envelope.trialid, subject_id=envelope.subject, site_id=envelope.siteid)
        records.add_subject(subject)
    subject.site_id = envelope.siteid
    subject.arm = envelope.data.arm
    subject.enrolled_at = envelope.data.enrolled_at
    data = envelope.data
    subject.car_t_infused_on = data.car_t_infused_on
    subject.weight_kg = str(data.weight_kg) if data.weight_kg is not None else None
    subject.screening_history = [h.model_dump(mode="json") for h in data.history]
    return subject


def ensure_subject_in(records: BatchRecords, *, subject_id: str, site_id: str) -> Subject:
    """Data may arrive before the enrolment record; the subject exists from its first event on."""
    subject = records.subject(subject_id)
    if subject is None:
        subject = new_row(Subject, trial_id=records.trial_id, subject_id=subject_id, site_id=site_id)
        records.add_subject(subject)
    return subject


@dataclass(frozen=True)
class Saved:
    """What storing a record the site may re-send did: added it, found it unchanged, or corrected it.

    A correction keeps the values it replaced in `before`, so the caller can audit them.
    """

    outcome: Literal["added", "unchanged", "corrected"]
    before: dict[str, object] = field(default_factory=dict)
    after: dict[str, object] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.outcome != "unchanged"


def _save(row: SQLModel | None, new: SQLModel, content: tuple[str, ...], derived: tuple[str, ...]) -> Saved:
    """Add `new`, or, when the site's `content` differs, overwrite the stored `row` (content and `derived`).

    Only what the site sent decides: an identical re-send is a no-op even if it would now be derived
    differently (a lab graded against a baseline that arrived since).
    """
    if row is None:
        return Saved("added")  # the caller adds it; only a correction is audited with its values
    fields = (*content, *derived)
    after = {name: _comparable(getattr(new, name)) for name in fields}
    before = {name: _comparable(getattr(row, name)) for name in fields}
    if all(before[name] == after[name] for name in content):
        return Saved("unchanged")
    for name in fields:
        setattr(row, name, getattr(new, name))
    changed = [name for name in fields if before[name] != after[name]]
    return Saved("corrected", {n: before[n] for n in changed}, {n: after[n] for n in changed})


def _comparable(value: object) -> object:
    """Instants compare in UTC: the database gives back UTC what the sender wrote with its own offset."""
    return utc(value) if isinstance(value, datetime) else value


DOSE_FIELDS = ("number", "administered_at", "administered_on", "cells_per_kg")
"""administered_on keeps the sender's offset, which the stored UTC instant loses: a new offset is a correction."""


def save_dose(records: BatchRecords, *, envelope: DoseAdministered) -> Saved:
    """A dose once; a re-sent dose_id with other content is the site's correction and replaces it."""
    data = envelope.data
    new = new_row(
        Dose,
        trial_id=envelope.trialid,
        subject_id=envelope.subject,
        dose_id=data.dose_id,
        number=data.number,
        administered_at=data.administered_at,
        administered_on=site_date(data.administered_at),
        cells_per_kg=str(data.cells_per_kg) if data.cells_per_kg is not None else None,
    )
    saved = _save(records.dose(envelope.subject, data.dose_id), new, DOSE_FIELDS, ())
    if saved.outcome == "added":
        records.add_dose(new)
    return saved


@dataclass(frozen=True)
class StoredLab:
    """What grading and storing one result needs, loaded in one go before any decision."""

    row: LabResult | None
    """The result as stored when the site re-sends it (a duplicate or a correction)."""
    inactive: frozenset[str]
    """This subject's results the site took back (entered in error, deleted), whenever their status arrived."""
    baseline_value: str | None
    """The latest active baseline of the same test, whatever unit it was sent in: the engine converts it (a
    change of lab after baseline must not lose the baseline the AKI and INR rules need)."""
    baseline_unit: str | None


def load_lab(
    records: BatchRecords, *, subject_id: str, result_id: str, test: str | None, loinc: str | None, with_baseline: bool
) -> StoredLab:
    inactive = frozenset(records.inactive(subject_id, "lab"))
    baseline = records.latest_baseline(subject_id, test=test, loinc=loinc) if with_baseline else None
    return StoredLab(
        row=records.lab(subject_id, result_id),
        inactive=inactive,
        baseline_value=baseline.value if baseline is not None else None,
        baseline_unit=baseline.unit if baseline is not None else None,
    )


LAB_FIELDS = ("test", "loinc", "value", "unit", "lln", "uln", "collected_at", "baseline", "anticoagulated")
LAB_DERIVED = ("term", "grade", "grade_floor", "grade_reason")


def save_lab(
    records: BatchRecords, *, envelope: LabResulted, graded: Grade, stored: LabResult | None
) -> tuple[Saved, LabResult]:
    """A result once; a re-sent result_id with other content is the site's correction: it replaces it, regraded.

    Returns what storing did and the row as it now stands.
    """
    data = envelope.data
    new = new_row(
        LabResult,
        trial_id=envelope.trialid,
        subject_id=envelope.subject,
        result_id=data.result_id,
        test=data.test,
        loinc=data.loinc,
        value=data.value,
        unit=data.unit,
        lln=str(data.lln) if data.lln is not None else None,
        uln=str(data.uln) if data.uln is not None else None,
        collected_at=data.collected_at,
        baseline=data.baseline,
        anticoagulated=data.anticoagulated,
        term=graded.term,
        grade=graded.grade,
        grade_floor=graded.floor,
        grade_reason=graded.reason[:1000],
    )
    saved = _save(stored, new, LAB_FIELDS, LAB_DERIVED)
    if saved.changed:
        records.stored_lab(stored or new, added=stored is None)
    return saved, stored or new


@dataclass(frozen=True)
class StoredAe:
    """One AE as stored before a version of it is applied."""

    state: SaeState | None
    """Its folded seriousness across the versions applied so far (None: first version seen)."""
    has_version: bool
    """This version was applied already: re-sent under another delivery id, it changes nothing."""


def load_ae(records: BatchRecords, *, subject_id: str, ae_id: str, version: int) -> StoredAe:
    row = records.seriousness(subject_id, ae_id)
    return StoredAe(
        state=sae_state_of(row) if row is not None else None,
        has_version=records.has_ae_version(subject_id, ae_id, version),
    )


def add_ae_version(records: BatchRecords, *, envelope: AeReported, flags: tuple[str, ...]) -> None:
    """Store a version as received (the caller checked it is new: see load_ae)."""
    records.add_ae_version(
        new_row(
            AeVersion,
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            ae_id=envelope.data.ae_id,
            version=envelope.data.version,
            event_id=envelope.id,
            payload=envelope.data.model_dump(mode="json"),
            received_at=envelope.receivedat,
            flags=list(flags),
            entered_at=site_entry_time(envelope),
        )
    )


def sae_state_of(row: AeSeriousness) -> SaeState:
    return SaeState(
        criteria=frozenset(row.criteria),
        max_grade=row.max_grade,
        latest_version=row.latest_version,
        outcome=row.outcome,
        awareness_at=row.awareness_at,
        awareness_basis=AwarenessBasis(row.awareness_basis) if row.awareness_basis else None,
        first_serious_version=row.first_serious_version,
    )


def save_sae_state(records: BatchRecords, *, subject_id: str, ae_id: str, state: SaeState) -> None:
    row = records.seriousness(subject_id, ae_id)
    if row is None:
        row = new_row(
            AeSeriousness,
            trial_id=records.trial_id,
            subject_id=subject_id,
            ae_id=ae_id,
            latest_version=state.latest_version,
        )
        records.add_seriousness(row)
    row.criteria = sorted(state.criteria)
    row.max_grade = state.max_grade
    row.latest_version = state.latest_version
    row.outcome = state.outcome
    row.awareness_at = state.awareness_at
    row.awareness_basis = state.awareness_basis.value if state.awareness_basis else None
    row.first_serious_version = state.first_serious_version


def set_record_status(records: BatchRecords, *, envelope: RecordStatusChanged) -> RecordStatus | None:
    """Record (or update) a site's status for a record; an enrolment's record is its subject.

    The site's latest word counts, by when it changed the status (else when we received it), not by when we
    processed it: a status older than the one stored (a replay, a redelivery out of order) changes nothing
    (returns None)."""
    data = envelope.data
    record_id = envelope.subject if data.record_type == "enrollment" else data.record_id
    row = records.status(envelope.subject, data.record_type, record_id)
    if row is not None and utc(data.changed_at or envelope.receivedat) < utc(row.changed_at):
        return None
    if row is None:
        row = new_row(
            RecordStatus,
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            record_type=data.record_type,
            record_id=record_id,
            status=data.status,
            changed_at=data.changed_at or envelope.receivedat,
            event_id=envelope.id,
        )
        records.add_status(row)
    row.status = data.status
    row.reason = data.reason
    row.changed_at = data.changed_at or envelope.receivedat
    row.event_id = envelope.id
    row.replaced_by = data.replaced_by if data.status in INACTIVE else None
    records.note_named(row.replaced_by)
    return row


def inactive_records(session: Session, *, trial_id: str, subject_id: str, record_type: str) -> dict[str, str]:
    """record_id -> status for one subject's records the site took back (entered in error, deleted)."""
    found = inactive_in_trial(session, trial_id=trial_id, record_type=record_type, subject_id=subject_id)
    return {record_id: status for (_, record_id), status in found.items()}


def inactive_in_trial(
    session: Session, *, trial_id: str, record_type: str, subject_id: str | None = None
) -> dict[tuple[str, str], str]:
    """(subject_id, record_id) -> status for records of this type the site took back."""
    query = select(RecordStatus.subject_id, RecordStatus.record_id, RecordStatus.status).where(
        RecordStatus.trial_id == trial_id,
        RecordStatus.record_type == record_type,
        col(RecordStatus.status).in_(sorted(INACTIVE)),
    )
    if subject_id is not None:
        query = query.where(RecordStatus.subject_id == subject_id)
    return {(subject, record_id): status for subject, record_id, status in session.exec(query)}


def record_statuses(session: Session, *, trial_id: str, subject_id: str) -> list[RecordStatus]:
    query = select(RecordStatus).where(RecordStatus.trial_id == trial_id, RecordStatus.subject_id == subject_id)
    return list(session.exec(query.order_by(col(RecordStatus.record_type), col(RecordStatus.record_id))))


def active_term_labs(session: Session, *, trial_id: str, subject_id: str, term: str) -> list[LabResult]:
    """A term's results the site has not taken back, latest first."""
    inactive = inactive_records(session, trial_id=trial_id, subject_id=subject_id, record_type="lab")
    query = select(LabResult).where(
        LabResult.trial_id == trial_id, LabResult.subject_id == subject_id, LabResult.term == term
    )
    return [r for r in session.exec(query.order_by(col(LabResult.collected_at).desc())) if r.result_id not in inactive]


def refresh_baseline(session: Session, records: BatchRecords, *, subject_id: str, term: str) -> LabTermState:
    """After a result's status or content changed: the term's baseline is its latest active graded baseline."""
    rows = active_term_labs(session, trial_id=records.trial_id, subject_id=subject_id, term=term)
    baseline = next((r for r in rows if r.baseline and r.grade is not None), None)
    state = records.term_state(subject_id, term)
    state.baseline_grade = baseline.grade if baseline else None
    state.baseline_collected_at = baseline.collected_at if baseline else None
    return state


def baseline_grades(session: Session, *, trial_id: str, subject_id: str) -> dict[str, int]:
    query = select(LabTermState).where(LabTermState.trial_id == trial_id, LabTermState.subject_id == subject_id)
    return {row.term: row.baseline_grade for row in session.exec(query) if row.baseline_grade is not None}


def subjects(session: Session, *, trial_id: str) -> list[Subject]:
    return list(session.exec(select(Subject).where(Subject.trial_id == trial_id).order_by(col(Subject.subject_id))))


def doses(session: Session, *, trial_id: str, subject_id: str | None = None) -> list[Dose]:
    query = select(Dose).where(Dose.trial_id == trial_id)
    if subject_id is not None:
        query = query.where(Dose.subject_id == subject_id)
    return list(session.exec(query.order_by(col(Dose.administered_at))))


def labs(session: Session, *, trial_id: str, subject_id: str | None = None) -> list[LabResult]:
    query = select(LabResult).where(LabResult.trial_id == trial_id)
    if subject_id is not None:
        query = query.where(LabResult.subject_id == subject_id)
    return list(session.exec(query.order_by(col(LabResult.collected_at))))


def ae_versions(session: Session, *, trial_id: str, subject_id: str | None = None) -> list[AeVersion]:
    query = select(AeVersion).where(AeVersion.trial_id == trial_id)
    if subject_id is not None:
        query = query.where(AeVersion.subject_id == subject_id)
    return list(session.exec(query.order_by(col(AeVersion.ae_id), col(AeVersion.version))))


def dlt_records(session: Session, *, trial_id: str, subject_id: str | None = None) -> list[DltRecord]:
    query = select(DltRecord).where(DltRecord.trial_id == trial_id)
    if subject_id is not None:
        query = query.where(DltRecord.subject_id == subject_id)
    return list(session.exec(query.order_by(col(DltRecord.subject_id), col(DltRecord.ae_id))))


def cohort_states(session: Session, *, trial_id: str) -> dict[str, CohortState]:
    """Locked on PostgreSQL: the consumer, the sweep and an officer's decision may reassess at once."""
    query = select(CohortState).where(CohortState.trial_id == trial_id).with_for_update()
    return {row.arm: row for row in session.exec(query)}


def flagged_assessments(session: Session, *, trial_id: str) -> set[tuple[str, str]]:
    query = select(MissedAssessment).where(MissedAssessment.trial_id == trial_id)
    return {(row.subject_id, row.assessment) for row in session.exec(query)}
