"""Queries on safety's tables. Keyword-only; never commit (the consumer's transaction does)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from services.safety.ctcae import Grade
from services.safety.models import AeSeriousness, AeVersion, Dose, LabResult, LabTermState, Subject
from services.safety.sae import SaeState
from shared.events import AeReported, AwarenessBasis, DoseAdministered, LabResulted, SubjectEnrolled


def upsert_subject(session: Session, *, envelope: SubjectEnrolled) -> Subject:
    subject = session.get(Subject, (envelope.trialid, envelope.subject))
    if subject is None:
        subject = Subject(trial_id=envelope.trialid, subject_id=envelope.subject, site_id=envelope.siteid)
    subject.site_id = envelope.siteid
    subject.arm = envelope.data.arm
    subject.enrolled_at = envelope.data.enrolled_at
    session.add(subject)
    return subject


def ensure_subject(session: Session, *, trial_id: str, subject_id: str, site_id: str) -> Subject:
    """Data may arrive before the enrolment record; the subject exists from its first event on."""
    subject = session.get(Subject, (trial_id, subject_id))
    if subject is None:
        subject = Subject(trial_id=trial_id, subject_id=subject_id, site_id=site_id)
        session.add(subject)
    return subject


def add_dose(session: Session, *, envelope: DoseAdministered) -> bool:
    key = (envelope.trialid, envelope.subject, envelope.data.dose_id)
    if session.get(Dose, key) is not None:
        return False
    data = envelope.data
    session.add(
        Dose(
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            dose_id=data.dose_id,
            number=data.number,
            administered_at=data.administered_at,
            cells_per_kg=str(data.cells_per_kg) if data.cells_per_kg is not None else None,
        )
    )
    return True


def lab_exists(session: Session, *, envelope: LabResulted) -> bool:
    return session.get(LabResult, (envelope.trialid, envelope.subject, envelope.data.result_id)) is not None


def baseline_lab_value(
    session: Session, *, trial_id: str, subject_id: str, test: str | None, loinc: str | None, unit: str | None
) -> str | None:
    """The latest baseline result of the same test in the same unit (liver and INR rules grade against it)."""
    query = select(LabResult).where(
        LabResult.trial_id == trial_id,
        LabResult.subject_id == subject_id,
        LabResult.baseline == True,  # noqa: E712 - SQL comparison
        LabResult.unit == unit,
    )
    query = query.where(LabResult.test == test) if test else query.where(LabResult.loinc == loinc)
    row = session.exec(query.order_by(col(LabResult.collected_at).desc())).first()
    return row.value if row is not None else None


def lab_term_state(session: Session, *, trial_id: str, subject_id: str, term: str) -> LabTermState:
    state = session.get(LabTermState, (trial_id, subject_id, term))
    if state is None:
        state = LabTermState(trial_id=trial_id, subject_id=subject_id, term=term)
        session.add(state)
    return state


def add_lab(session: Session, *, envelope: LabResulted, graded: Grade) -> None:
    data = envelope.data
    session.add(
        LabResult(
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
            term=graded.term,
            grade=graded.grade,
            grade_reason=graded.reason[:1000],
        )
    )


def add_ae_version(session: Session, *, envelope: AeReported, flags: tuple[str, ...]) -> bool:
    """Store a version once; a re-sent version (same ae_id and version) never overwrites the first."""
    key = (envelope.trialid, envelope.subject, envelope.data.ae_id, envelope.data.version)
    if session.get(AeVersion, key) is not None:
        return False
    session.add(
        AeVersion(
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            ae_id=envelope.data.ae_id,
            version=envelope.data.version,
            event_id=envelope.id,
            payload=envelope.data.model_dump(mode="json"),
            received_at=envelope.receivedat,
            flags=list(flags),
        )
    )
    return True


def load_sae_state(session: Session, *, trial_id: str, subject_id: str, ae_id: str) -> SaeState | None:
    row = session.get(AeSeriousness, (trial_id, subject_id, ae_id))
    if row is None:
        return None
    return SaeState(
        criteria=frozenset(row.criteria),
        max_grade=row.max_grade,
        latest_version=row.latest_version,
        outcome=row.outcome,
        awareness_at=row.awareness_at,
        awareness_basis=AwarenessBasis(row.awareness_basis) if row.awareness_basis else None,
        first_serious_version=row.first_serious_version,
    )


def save_sae_state(session: Session, *, trial_id: str, subject_id: str, ae_id: str, state: SaeState) -> None:
    row = session.get(AeSeriousness, (trial_id, subject_id, ae_id)) or AeSeriousness(
        trial_id=trial_id, subject_id=subject_id, ae_id=ae_id, latest_version=state.latest_version
    )
    row.criteria = sorted(state.criteria)
    row.max_grade = state.max_grade
    row.latest_version = state.latest_version
    row.outcome = state.outcome
    row.awareness_at = state.awareness_at
    row.awareness_basis = state.awareness_basis.value if state.awareness_basis else None
    row.first_serious_version = state.first_serious_version
    session.add(row)
