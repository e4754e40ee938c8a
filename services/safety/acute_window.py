"""Safety's acute-reaction layer: after an AE version or an infusion is stored, find the subject's AEs whose
onset falls in the acute window after an infusion (see `acute_reactions.py`), keep them, and signal each
one the first time it reaches the alert grade and again when it gets worse.

Both orders work: an AE reported before its infusion record arrived is matched when the dose arrives.
Keyword-only; never commit (the caller's transaction does).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from services.safety import store
from services.safety.acute_reactions import Infusion, decide
from services.safety.batch_records import BatchRecords
from services.safety.models import AcuteReactionRow
from shared.clock import utc
from shared.events import (
    AcuteReactionData,
    AcuteReactionDetected,
    AcuteReactionWithdrawalData,
    AcuteReactionWithdrawn,
    ClinicalEnvelopeBase,
    RecordStatusChanged,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol

SIGNAL_SOURCE = "/services/safety"


def check_after(
    session: Session,
    records: BatchRecords,
    envelope: ClinicalEnvelopeBase,
    *,
    protocol: Protocol,
    now: datetime,
    signals_topic: str,
) -> list[Outgoing]:
    """The hook: re-match the subject's AEs against their infusions after either changed (an AE version, an
    infusion, an AE restored by the site)."""
    rules = protocol.acute_reactions
    if rules is None:
        return []
    trial_id, subject_id = envelope.trialid, envelope.subject
    inactive_doses = records.inactive(subject_id, "dose")
    infusions = [
        Infusion(d.dose_id, d.number, utc(d.administered_at), d.administered_on or utc(d.administered_at).date())
        for d in sorted(records.doses_of(subject_id), key=lambda d: utc(d.administered_at))
        if d.dose_id not in inactive_doses
    ]
    if not infusions:
        return []
    inactive_aes = records.inactive(subject_id, "ae")
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for version in sorted(records.ae_versions_of(subject_id), key=lambda v: (v.ae_id, v.version)):
        if version.ae_id not in inactive_aes:
            latest[version.ae_id] = (version.version, version.payload)
    stored = records.reactions_of(subject_id)
    signals = []
    for ae_id, (number, payload) in sorted(latest.items()):
        onset_at = _instant(payload.get("onset_at"))
        onset = payload.get("onset") if isinstance(payload.get("onset"), str) else None
        grade = payload.get("grade") if isinstance(payload.get("grade"), int) else None
        row = stored.get(ae_id)
        decision = decide(
            grade=grade,
            onset_at=onset_at,
            onset=onset,
            infusions=infusions,
            rules=rules,
            signalled_grade=row.grade if row is not None else None,
        )
        match = decision.match
        if not decision.signal or match is None or grade is None:
            continue
        term = str(payload.get("ctcae_term") or payload.get("term") or "")
        previous = row.grade if row is not None else None
        row = row or AcuteReactionRow(
            trial_id=trial_id,
            subject_id=subject_id,
            ae_id=ae_id,
            ae_version=number,
            term=term[:500],
            grade=grade,
            dose_id=match.infusion.dose_id,
            dose_number=match.infusion.number,
            infusion_at=match.infusion.started_at,
            onset_precision=match.precision,
            reason=match.reason,
            signalled_at=now,
        )
        row.ae_version, row.term, row.grade = number, term[:500], grade
        row.dose_id, row.dose_number, row.infusion_at = (
            match.infusion.dose_id,
            match.infusion.number,
            match.infusion.started_at,
        )
        row.onset, row.onset_at, row.onset_precision = onset, onset_at, match.precision
        row.hours_after_infusion = str(match.hours_after) if match.hours_after is not None else None
        row.dlt_grade, row.reason, row.signalled_at = decision.dlt_grade, match.reason[:1000], now
        if row.ae_id not in stored:
            records.add_reaction(row)
        subject = store.ensure_subject_in(records, subject_id=subject_id, site_id=envelope.siteid)
        data = AcuteReactionData(
            site_id=subject.site_id,
            subject_id=subject_id,
            ae_id=ae_id,
            ae_version=number,
            term=term,
            grade=grade,
            previous_grade=previous,
            onset=onset,
            onset_at=onset_at,
            onset_precision=match.precision,
            dose_id=match.infusion.dose_id,
            dose_number=match.infusion.number,
            infusion_at=match.infusion.started_at,
            hours_after_infusion=match.hours_after,
            dlt_grade=decision.dlt_grade,
            reason=match.reason,
            received_at=envelope.receivedat,
            source_event_id=envelope.id,
        )
        signal = AcuteReactionDetected(
            id=deterministic_id("signal", envelope.id, "acute_reaction", ae_id, str(grade)),
            source=SIGNAL_SOURCE,
            subject=subject_id,
            time=onset_at or match.infusion.started_at,
            trialid=trial_id,
            data=data,
        )
        signals.append(Outgoing(topic=signals_topic, key=message_key(trial_id, subject_id), envelope=signal))
    return signals


def status_changed(
    session: Session,
    records: BatchRecords,
    envelope: RecordStatusChanged,
    *,
    previous_status: str | None,
    protocol: Protocol,
    now: datetime,
    signals_topic: str,
) -> list[Outgoing]:
    """The site took an AE back (entered in error, deleted) or restored it: its acute reaction is withdrawn (notify
    cancels the review), or matched again on restore (a worse grade the site sent meanwhile pages now; else the
    reaction comes back as stored). The caller stored the new status."""
    data = envelope.data
    subject_id, ae_id = envelope.subject, data.record_id
    taken_back, was_taken_back = data.status in store.INACTIVE, previous_status in store.INACTIVE
    row = records.reactions_of(subject_id).get(ae_id)
    if taken_back and not was_taken_back:
        return [] if row is None else [_withdrawal(envelope, row, signals_topic)]
    if was_taken_back and not taken_back:
        matched = check_after(session, records, envelope, protocol=protocol, now=now, signals_topic=signals_topic)
        if row is None or any(o.envelope.data.ae_id == ae_id for o in matched):  # type: ignore[attr-defined]
            return matched
        return [*matched, _restored(envelope, row, signals_topic)]
    return []


def _withdrawal(envelope: RecordStatusChanged, row: AcuteReactionRow, topic: str) -> Outgoing:
    data = envelope.data
    assert data.status != "restored"  # a withdrawal is for a retraction only
    signal = AcuteReactionWithdrawn(
        id=deterministic_id("signal", envelope.id, "acute_reaction.withdrawn", row.ae_id),
        source=SIGNAL_SOURCE,
        subject=row.subject_id,
        time=envelope.receivedat,
        trialid=envelope.trialid,
        data=AcuteReactionWithdrawalData(
            site_id=envelope.siteid,
            subject_id=row.subject_id,
            ae_id=row.ae_id,
            term=row.term,
            grade=row.grade,
            dose_number=row.dose_number,
            status=data.status,
            reason=data.reason,
            changed_at=data.changed_at or envelope.receivedat,
            received_at=envelope.receivedat,
            source_event_id=envelope.id,
        ),
    )
    return Outgoing(topic=topic, key=message_key(envelope.trialid, row.subject_id), envelope=signal)


def _restored(envelope: RecordStatusChanged, row: AcuteReactionRow, topic: str) -> Outgoing:
    """The reaction as stored (its worst grade signalled), paged again: the site restored its AE."""
    data = AcuteReactionData(
        site_id=envelope.siteid,
        subject_id=row.subject_id,
        ae_id=row.ae_id,
        ae_version=row.ae_version,
        term=row.term,
        grade=row.grade,
        previous_grade=None,
        onset=row.onset,
        onset_at=row.onset_at,
        onset_precision="time" if row.onset_precision == "time" else "date",
        dose_id=row.dose_id,
        dose_number=row.dose_number,
        infusion_at=row.infusion_at,
        hours_after_infusion=Decimal(row.hours_after_infusion) if row.hours_after_infusion is not None else None,
        dlt_grade=row.dlt_grade,
        reason=f"the site restored AE {row.ae_id}: {row.reason}"[:1000],
        received_at=envelope.receivedat,
        source_event_id=envelope.id,
    )
    signal = AcuteReactionDetected(
        id=deterministic_id("signal", envelope.id, "acute_reaction", row.ae_id, str(row.grade)),
        source=SIGNAL_SOURCE,
        subject=row.subject_id,
        time=row.onset_at or row.infusion_at,
        trialid=envelope.trialid,
        data=data,
    )
    return Outgoing(topic=topic, key=message_key(envelope.trialid, row.subject_id), envelope=signal)


def _instant(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def subject_reactions(session: Session, *, trial_id: str, subject_id: str) -> list[AcuteReactionRow]:
    query = (
        select(AcuteReactionRow)
        .where(AcuteReactionRow.trial_id == trial_id, AcuteReactionRow.subject_id == subject_id)
        .order_by(col(AcuteReactionRow.infusion_at), col(AcuteReactionRow.ae_id))
    )
    return list(session.exec(query))
