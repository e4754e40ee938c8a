"""Service layer for eligibility at the first dose, dosing conformance and product release (issue 13).

Loads what the pure rules (`eligibility`, `dosing_conformance`, `product_release`) need, and turns their findings
into `protocol.deviation` signals carrying the roles the protocol names for them. Dose checks run when a dose is
stored or corrected; eligibility is re-judged on every stored change of a dosed subject (a screening lab or an
enrolment form entered after the dose still counts) and signalled only when the verdict changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlmodel import Session, select

from services.safety import eligibility, store
from services.safety.batch_records import BatchRecords
from services.safety.dlt_window import site_date
from services.safety.dosing_conformance import DoseFacts, GivenDose, check_dose
from services.safety.models import Dose, LabResult, Subject
from services.safety.product_release import check_release
from services.safety.protocol_engine import SIGNAL_SOURCE
from services.safety.subject_store import LabFacts, SubjectState
from shared.clock import utc
from shared.events import (
    ClinicalEnvelope,
    DoseAdministered,
    ProtocolDeviation,
    ProtocolDeviationData,
    ScreeningHistory,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol


def check_dose_event(
    records: BatchRecords, envelope: ClinicalEnvelope, *, protocol: Protocol, now: datetime, topic: str
) -> list[Outgoing]:
    """A stored or corrected dose's own checks (dose, schedule, premedication, product release), against the
    subject's doses as the batch holds them (this one included)."""
    if not isinstance(envelope, DoseAdministered):
        return []
    subject = records.subject(envelope.subject)
    if subject is None:
        return []
    data = envelope.data
    inactive = records.inactive(envelope.subject, "dose")
    if data.dose_id in inactive:
        return []
    found: list[tuple[str, str, bool, list[str]]] = []
    arm = protocol.arm(subject.arm) if subject.arm else None
    if protocol.dosing is not None and arm is not None:
        weight = data.weight_kg if data.weight_kg is not None else _decimal(subject.weight_kg)
        facts = DoseFacts(
            dose_id=data.dose_id,
            number=data.number,
            administered_at=data.administered_at,
            administered_on=site_date(data.administered_at),
            cells_per_kg=data.cells_per_kg,
            total_cells=data.total_cells,
            weight_kg=weight,
            premedication=data.premedication,
        )
        roles = protocol.dosing.notify_roles
        others = _given_of(records.doses_of(envelope.subject), inactive)
        for finding in check_dose(protocol.dosing, arm, facts, others=others):
            found.append((finding.kind, finding.detail, finding.pages, roles))
    if protocol.product_release is not None:
        release = check_release(protocol.product_release, dose_id=data.dose_id, lot=data.lot, release=data.release)
        if release is not None:
            found.append((release.kind, release.detail, True, protocol.product_release.notify_roles))
    return [
        _deviation(
            subject, source_id=envelope.id, kind=kind, detail=detail, pages=pages, roles=roles, now=now, topic=topic
        )
        for kind, detail, pages, roles in found
    ]


def _given(session: Session, subject: Subject, inactive: dict[str, str]) -> list[GivenDose]:
    doses = session.exec(
        select(Dose).where(Dose.trial_id == subject.trial_id, Dose.subject_id == subject.subject_id)
    ).all()
    return _given_of(doses, inactive)


def _given_of(doses: Sequence[Dose], inactive: dict[str, str]) -> list[GivenDose]:
    return [
        GivenDose(d.dose_id, d.administered_at, d.administered_on or utc(d.administered_at).date())
        for d in doses
        if d.dose_id not in inactive
    ]


def check_eligibility(
    session: Session,
    subject: Subject,
    *,
    protocol: Protocol,
    source_id: str,
    now: datetime,
    topic: str,
    state: SubjectState | None = None,
) -> list[Outgoing]:
    """Eligibility at the first dose, re-judged on a stored change of the subject (see the module's note).

    `state`: the subject as the caller already loaded it, else read here."""
    rules = protocol.eligibility
    if rules is None:
        return []
    keys = {"trial_id": subject.trial_id, "subject_id": subject.subject_id}
    if state is None:
        given = _given(session, subject, store.inactive_records(session, **keys, record_type="dose"))
    else:
        given = _given_of(state.doses, state.inactive_ids("dose"))
    if not given:
        return []  # never dosed: never at risk, nothing to signal
    first = min(given, key=lambda d: utc(d.administered_at))
    if state is None:
        inactive_labs = store.inactive_records(session, **keys, record_type="lab")
        labs: Sequence[LabResult | LabFacts] = session.exec(
            select(LabResult).where(LabResult.trial_id == subject.trial_id, LabResult.subject_id == subject.subject_id)
        ).all()
    else:
        inactive_labs, labs = state.inactive_ids("lab"), state.labs
    verdict = eligibility.judge(
        rules,
        first_dose_at=first.administered_at,
        first_dose_on=first.administered_on,
        car_t_infused_on=subject.car_t_infused_on,
        history=[ScreeningHistory.model_validate(h) for h in subject.screening_history or []],
        labs=[  # the judge reads screening results only: what was drawn after the first infusion is left out here
            eligibility.LabReading(lab.test, lab.loinc, lab.value, lab.unit, lab.uln, lab.collected_at)
            for lab in labs
            if lab.collected_at <= first.administered_at and lab.result_id not in inactive_labs
        ],
    )
    kind = verdict.deviation_kind
    # A new page only when the answer changes: missing -> not eligible, or another reason of ineligibility; a
    # late result that fills one gap of several, or a value that moves within the same verdict, pages no one.
    signature = f"{kind}: {'; '.join(verdict.failed)}"[:2000] if kind else "eligible"
    if signature == subject.eligibility_signalled:
        return []
    subject.eligibility_signalled = signature
    session.add(subject)
    if kind is None:
        return []  # now eligible (a late screening result): the earlier deviation stands for the officer's review
    detail = f"first infusion {first.administered_on.isoformat()}: {verdict.detail()}"
    return [
        _deviation(
            subject,
            source_id=source_id,
            kind=kind,
            detail=detail,
            pages=True,
            roles=rules.notify_roles,
            now=now,
            topic=topic,
        )
    ]


def _deviation(
    subject: Subject,
    *,
    source_id: str,
    kind: str,
    detail: str,
    pages: bool,
    roles: Sequence[str],
    now: datetime,
    topic: str,
) -> Outgoing:
    signal = ProtocolDeviation(
        id=deterministic_id("signal", source_id, "protocol.deviation", kind),
        source=SIGNAL_SOURCE,
        subject=subject.subject_id,
        time=now,
        trialid=subject.trial_id,
        data=ProtocolDeviationData(
            site_id=subject.site_id,
            subject_id=subject.subject_id,
            arm=subject.arm,
            kind=kind,
            detail=detail,
            pages=pages,
            notify_roles=list(roles),
        ),
    )
    return Outgoing(topic=topic, key=message_key(subject.trial_id, subject.subject_id), envelope=signal)


def _decimal(text: str | None) -> Decimal | None:
    return Decimal(text) if text else None
