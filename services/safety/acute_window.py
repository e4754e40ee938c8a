"""Safety's acute-reaction layer: after an AE version or an infusion is stored, find the subject's AEs whose
onset falls in the acute window after an infusion (see `acute_reactions.py`), keep them, and signal each
one the first time it reaches the alert grade and again when it gets worse.

Both orders work: an AE reported before its infusion record arrived is matched when the dose arrives.
Keyword-only; never commit (the caller's transaction does).
"""

from __future__ import annotations

from datetime import datetime
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
    AeReported,
    DoseAdministered,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol

SIGNAL_SOURCE = "/services/safety"


def check_after(
    session: Session,
    records: BatchRecords,
    envelope: AeReported | DoseAdministered,
    *,
    protocol: Protocol,
    now: datetime,
    signals_topic: str,
) -> list[Outgoing]:
    """The hook: re-match the subject's AEs against their infusions after either changed."""
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


def _instant(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def subject_reactions(session: Session, *, trial_id: str, subject_id: str) -> list[AcuteReactionRow]:
    query = (
        select(AcuteReactionRow)
        .where(AcuteReactionRow.trial_id == trial_id, AcuteReactionRow.subject_id == subject_id)
        .order_by(col(AcuteReactionRow.infusion_at), col(AcuteReactionRow.ae_id))
    )
    return list(session.exec(query))
