"""Builders of clinical envelopes for the protocol-engine tests, and a small driver that applies them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from services.safety import models
from services.safety.clinical_events import apply_clinical_event
from shared.db import create_tables
from shared.events import (
    AeData,
    AeReported,
    AeReviewData,
    AeReviewRecorded,
    ClinicalEnvelope,
    DoseAdministered,
    DoseData,
    EnrollmentData,
    EnvelopeBase,
    LabData,
    LabResulted,
    RecordStatusChanged,
    RecordStatusData,
    SubjectEnrolled,
    VitalsData,
    VitalsRecorded,
    deterministic_id,
)
from shared.inbox import ProcessedEvent
from shared.outbox import OutboxMessage, Outgoing
from shared.protocol import Protocol

SIGNALS = "test.signals.v1"
RECEIVED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _common(trial: str, subject: str, sender: str, at: datetime = RECEIVED) -> dict[str, Any]:
    return {
        "id": deterministic_id("inbound", "edc", trial, subject, sender),
        "source": "/sources/edc",
        "subject": subject,
        "time": at,
        "trialid": trial,
        "siteid": "SITE-1",
        "receivedat": at,
        "senderid": sender,
    }


def enrol(
    subject: str, arm: str, on: date, *, trial: str = "NCT07212335", sender: str | None = None
) -> SubjectEnrolled:
    data = EnrollmentData(arm=arm, enrolled_at=on)
    return SubjectEnrolled(**_common(trial, subject, sender or f"enrol-{arm}-{on}"), data=data)


def dose(subject: str, at: datetime, *, number: int = 1, trial: str = "NCT07212335") -> DoseAdministered:
    data = DoseData(dose_id=f"{subject}-D{number}", number=number, administered_at=at)
    return DoseAdministered(**_common(trial, subject, f"dose-{number}"), data=data)


def ae(
    subject: str,
    *,
    ae_id: str = "AE-1",
    version: int = 1,
    trial: str = "NCT07212335",
    received: datetime = RECEIVED,
    **data: Any,
) -> AeReported:
    payload: dict[str, Any] = {"ae_id": ae_id, "version": version, "term": "Pneumonitis", "grade": 3}
    payload.update(data)
    return AeReported(**_common(trial, subject, f"{ae_id}-v{version}", received), data=AeData.model_validate(payload))


def lab(
    subject: str,
    *,
    result_id: str,
    test: str,
    value: str,
    collected_at: datetime,
    baseline: bool = False,
    unit: str | None = "10^9/L",
    lln: str | None = None,
    trial: str = "NCT07212335",
) -> LabResulted:
    data = LabData(
        result_id=result_id,
        test=test,
        value=value,
        unit=unit,
        lln=lln,  # type: ignore[arg-type]  # pydantic parses the text exactly
        collected_at=collected_at,
        baseline=baseline,
    )
    return LabResulted(**_common(trial, subject, f"lab-{result_id}", collected_at), data=data)


def ae_review(
    subject: str,
    assessed_at: datetime,
    *,
    visit: str | None = None,
    review_id: str | None = None,
    new_aes: bool = False,
) -> AeReviewRecorded:
    """The site's "AE review done" record for a visit (none new unless `new_aes`)."""
    rid = review_id or f"{subject}-AER-{assessed_at.isoformat()}"
    data = AeReviewData(review_id=rid, assessed_at=assessed_at, visit=visit, new_aes=new_aes)
    return AeReviewRecorded(**_common("NCT07212335", subject, f"aer-{rid}", assessed_at), data=data)


def vitals(subject: str, measured_at: datetime, *, vitals_id: str | None = None, **signs: str) -> VitalsRecorded:
    vid = vitals_id or f"{subject}-VS-{measured_at.isoformat()}"
    data = VitalsData.model_validate({"vitals_id": vid, "measured_at": measured_at, **signs})
    return VitalsRecorded(**_common("NCT07212335", subject, f"vs-{vid}", measured_at), data=data)


def status(
    subject: str, record_type: str, record_id: str, value: str = "entered_in_error", *, trial: str = "NCT07212335"
) -> RecordStatusChanged:
    data = RecordStatusData.model_validate({"record_type": record_type, "record_id": record_id, "status": value})
    return RecordStatusChanged(**_common(trial, subject, f"status-{record_type}-{record_id}-{value}"), data=data)


class Driver:
    """Applies envelopes the way the consumer does (one transaction each) and keeps every signal."""

    def __init__(self, engine: Engine, protocol: Protocol) -> None:
        create_tables(engine, [*models.TABLES, ProcessedEvent, OutboxMessage])
        self.engine = engine
        self.protocol = protocol
        self.signals: list[Outgoing] = []

    def apply(self, envelope: ClinicalEnvelope, *, now: datetime = RECEIVED) -> list[EnvelopeBase]:
        with Session(self.engine) as session, session.begin():
            out = list(apply_clinical_event(session, envelope, now, protocol=self.protocol, signals_topic=SIGNALS))
        self.signals += out
        return [o.envelope for o in out]

    def apply_all(self, envelopes: Iterable[ClinicalEnvelope], *, now: datetime = RECEIVED) -> list[EnvelopeBase]:
        return [signal for envelope in envelopes for signal in self.apply(envelope, now=now)]


def of_type(signals: Sequence[EnvelopeBase], kind: str) -> list[Any]:
    return [s for s in signals if getattr(s, "type", None) == kind]


def types(signals: Sequence[EnvelopeBase]) -> list[str]:
    return [str(getattr(s, "type", "")) for s in signals]
