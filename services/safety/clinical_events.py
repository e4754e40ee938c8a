"""Safety's service layer: apply one clinical event inside the consumer's transaction.

Returns the signals to publish; the caller puts them in the outbox in the same transaction. After the
event's own rule (lab grading, SAE), every event that changed what is stored re-runs the protocol engine
for its subject (DLT window and records) and the cohorts (3+3), so late or out-of-order data settles
into the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from services.safety import protocol_engine, store
from services.safety.ctcae import check_ae
from services.safety.lab_toxicity import decide, grade_lab, lab_test_code
from services.safety.models import Subject
from services.safety.sae import SaeAssessment, SaeSignalKind, assess_ae
from shared.audit import lock_audit_chain
from shared.events import (
    AeReported,
    ClinicalEnvelope,
    DoseAdministered,
    LabResulted,
    LabToxicity,
    LabToxicityData,
    RecordStatusChanged,
    SaeData,
    SaeDetected,
    SaeUpdated,
    SubjectEnrolled,
    deterministic_id,
    message_key,
)
from shared.kafka import PoisonMessage
from shared.outbox import Outgoing
from shared.protocol import Protocol

SIGNAL_SOURCE = protocol_engine.SIGNAL_SOURCE
AUDIT_SERVICE = protocol_engine.AUDIT_SERVICE


def apply_clinical_event(
    session: Session, envelope: ClinicalEnvelope, now: datetime, *, protocol: Protocol, signals_topic: str
) -> Sequence[Outgoing]:
    if envelope.trialid != protocol.trial_id:
        raise PoisonMessage(
            f"event for trial '{envelope.trialid}' but this safety service runs protocol '{protocol.trial_id}'"
        )
    lock_audit_chain(session, service=AUDIT_SERVICE)  # first, so every safety transaction locks in one order
    signals: list[Outgoing] = []
    if isinstance(envelope, SubjectEnrolled):
        if protocol.arm(envelope.data.arm) is None:
            raise PoisonMessage(f"arm '{envelope.data.arm}' is not in protocol {protocol.trial_id}")
        existing = session.get(Subject, (envelope.trialid, envelope.subject))
        previous_arm = existing.arm if existing is not None else None
        store.upsert_subject(session, envelope=envelope)
        session.flush()
        if previous_arm != envelope.data.arm:
            signals += protocol_engine.check_enrolment(
                session, protocol=protocol, envelope=envelope, now=now, signals_topic=signals_topic
            )
        changed = True
    else:
        store.ensure_subject(session, trial_id=envelope.trialid, subject_id=envelope.subject, site_id=envelope.siteid)
        changed, signals = _apply_record(session, envelope, protocol=protocol, signals_topic=signals_topic)
    if not changed:
        return signals
    session.flush()
    signals += protocol_engine.reassess_subject(
        session,
        protocol=protocol,
        trial_id=envelope.trialid,
        subject_id=envelope.subject,
        source_event_id=envelope.id,
        now=now,
        signals_topic=signals_topic,
    )
    session.flush()
    signals += protocol_engine.reassess_cohorts(
        session, protocol=protocol, now=now, source_id=envelope.id, signals_topic=signals_topic
    )
    return signals


def _apply_record(
    session: Session, envelope: ClinicalEnvelope, *, protocol: Protocol, signals_topic: str
) -> tuple[bool, list[Outgoing]]:
    """Store a dose, lab, AE or status; (whether anything new was stored, the record's own signals)."""
    if isinstance(envelope, DoseAdministered):
        return store.add_dose(session, envelope=envelope), []
    if isinstance(envelope, LabResulted):
        if store.lab_exists(session, envelope=envelope):
            return False, []  # the same result re-sent under another delivery id
        return True, _apply_lab(session, envelope, protocol=protocol, signals_topic=signals_topic)
    if isinstance(envelope, AeReported):
        return _apply_ae(session, envelope, signals_topic=signals_topic)
    if isinstance(envelope, RecordStatusChanged):
        store.set_record_status(session, envelope=envelope)
        if envelope.data.record_type == "lab":
            session.flush()
            store.refresh_baseline(
                session, trial_id=envelope.trialid, subject_id=envelope.subject, result_id=envelope.data.record_id
            )
        return True, []
    raise PoisonMessage(f"unsupported clinical event {type(envelope).__name__}")


def _apply_lab(session: Session, envelope: LabResulted, *, protocol: Protocol, signals_topic: str) -> list[Outgoing]:
    data = envelope.data
    baseline_value = None
    if not data.baseline:
        baseline_value = store.baseline_lab_value(
            session,
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            test=data.test,
            loinc=data.loinc,
            unit=data.unit,
        )
    graded = grade_lab(data, baseline_value=baseline_value)
    store.add_lab(session, envelope=envelope, graded=graded)
    if graded.grade is None:
        return []
    state = store.lab_term_state(session, trial_id=envelope.trialid, subject_id=envelope.subject, term=graded.term)
    decision = decide(
        graded,
        is_baseline=data.baseline,
        threshold=protocol.lab_alerts.threshold(graded.term),
        baseline_grade=state.baseline_grade,
        signalled_grade=state.signalled_grade,
    )
    if data.baseline:
        if state.baseline_collected_at is None or data.collected_at >= state.baseline_collected_at:
            state.baseline_grade = graded.grade
            state.baseline_collected_at = data.collected_at
        return []
    if not decision.signal:
        return []
    state.signalled_grade = graded.grade
    signal = LabToxicity(
        id=deterministic_id("signal", envelope.id, "lab.toxicity"),
        source=SIGNAL_SOURCE,
        subject=envelope.subject,
        time=data.collected_at,
        trialid=envelope.trialid,
        data=LabToxicityData(
            site_id=envelope.siteid,
            subject_id=envelope.subject,
            result_id=data.result_id,
            test=lab_test_code(data),
            term=graded.term,
            grade=graded.grade,
            baseline_grade=decision.baseline_grade,
            previous_grade=decision.previous_grade,
            value=data.value,
            unit=data.unit,
            reason=graded.reason,
            collected_at=data.collected_at,
            source_event_id=envelope.id,
        ),
    )
    return [Outgoing(topic=signals_topic, key=message_key(envelope.trialid, envelope.subject), envelope=signal)]


def _apply_ae(session: Session, envelope: AeReported, *, signals_topic: str) -> tuple[bool, list[Outgoing]]:
    ae = envelope.data
    keys = {"trial_id": envelope.trialid, "subject_id": envelope.subject, "ae_id": ae.ae_id}
    prior = store.load_sae_state(session, **keys)
    assessment = assess_ae(prior, ae, received_at=envelope.receivedat)
    quality = [f"{flag.code}: {flag.message}" for flag in check_ae(ae.ctcae_term or ae.term, ae.grade, ae.meddra_code)]
    if not store.add_ae_version(session, envelope=envelope, flags=(*assessment.flags, *quality)):
        return False, []  # this version was already applied (re-sent under another delivery id)
    store.save_sae_state(session, **keys, state=assessment.state)
    if assessment.signal is None:
        return True, []
    return True, [
        Outgoing(
            topic=signals_topic,
            key=message_key(envelope.trialid, envelope.subject),
            envelope=sae_signal(envelope, assessment),
        )
    ]


def sae_signal(envelope: AeReported, assessment: SaeAssessment) -> SaeDetected | SaeUpdated:
    state = assessment.state
    if state.awareness_at is None or state.awareness_basis is None:
        raise ValueError("an SAE signal needs the awareness time its clock starts from")
    ae = envelope.data
    data = SaeData(
        site_id=envelope.siteid,
        subject_id=envelope.subject,
        ae_id=ae.ae_id,
        ae_version=ae.version,
        term=ae.ctcae_term or ae.term,
        grade=state.max_grade,
        criteria=sorted(state.criteria),
        relatedness=ae.relatedness,
        outcome=state.outcome,
        onset=ae.onset,
        awareness_at=state.awareness_at,
        awareness_basis=state.awareness_basis,
        received_at=envelope.receivedat,
        source_event_id=envelope.id,
    )
    kind = assessment.signal
    common = {
        "id": deterministic_id("signal", envelope.id, str(kind)),
        "source": SIGNAL_SOURCE,
        "subject": envelope.subject,
        "time": envelope.receivedat,
        "trialid": envelope.trialid,
        "data": data,
    }
    if kind is SaeSignalKind.DETECTED:
        return SaeDetected.model_validate(common)
    return SaeUpdated.model_validate(common)
