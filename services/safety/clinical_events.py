"""Safety's service layer: apply one clinical event inside the consumer's transaction.

Returns the signals to publish; the caller puts them in the outbox in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from services.safety import store
from services.safety.sae import SaeAssessment, SaeSignalKind, assess_ae
from shared.events import (
    AeReported,
    ClinicalEnvelope,
    DoseAdministered,
    LabResulted,
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

SIGNAL_SOURCE = "/services/safety"


def apply_clinical_event(
    session: Session, envelope: ClinicalEnvelope, now: datetime, *, protocol: Protocol, signals_topic: str
) -> Sequence[Outgoing]:
    if envelope.trialid != protocol.trial_id:
        raise PoisonMessage(
            f"event for trial '{envelope.trialid}' but this safety service runs protocol '{protocol.trial_id}'"
        )
    if isinstance(envelope, SubjectEnrolled):
        if protocol.arm(envelope.data.arm) is None:
            raise PoisonMessage(f"arm '{envelope.data.arm}' is not in protocol {protocol.trial_id}")
        store.upsert_subject(session, envelope=envelope)
        return []
    store.ensure_subject(session, trial_id=envelope.trialid, subject_id=envelope.subject, site_id=envelope.siteid)
    if isinstance(envelope, DoseAdministered):
        store.add_dose(session, envelope=envelope)
        return []
    if isinstance(envelope, LabResulted):
        store.add_lab(session, envelope=envelope)
        return []
    if isinstance(envelope, AeReported):
        return _apply_ae(session, envelope, signals_topic=signals_topic)
    raise PoisonMessage(f"unsupported clinical event {type(envelope).__name__}")


def _apply_ae(session: Session, envelope: AeReported, *, signals_topic: str) -> list[Outgoing]:
    ae = envelope.data
    keys = {"trial_id": envelope.trialid, "subject_id": envelope.subject, "ae_id": ae.ae_id}
    prior = store.load_sae_state(session, **keys)
    assessment = assess_ae(prior, ae, received_at=envelope.receivedat)
    if not store.add_ae_version(session, envelope=envelope, flags=assessment.flags):
        return []  # this version was already applied (re-sent under another delivery id)
    store.save_sae_state(session, **keys, state=assessment.state)
    if assessment.signal is None:
        return []
    return [
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
