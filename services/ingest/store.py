"""Queries on ingest's tables. Keyword-only and never committing: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from services.ingest.models import AcceptedDelivery
from shared.events import ClinicalEnvelopeBase


def already_accepted(session: Session, *, source_id: str, event_ids: Iterable[str]) -> set[str]:
    ids = list(event_ids)
    if not ids:
        return set()
    query = select(AcceptedDelivery.event_id).where(
        AcceptedDelivery.source_id == source_id, col(AcceptedDelivery.event_id).in_(ids)
    )
    return set(session.exec(query).all())


def record_accepted(
    session: Session, *, source_id: str, envelopes: Sequence[ClinicalEnvelopeBase], now: datetime
) -> None:
    for envelope in envelopes:
        if session.get(AcceptedDelivery, (source_id, envelope.senderid)) is None:
            session.add(
                AcceptedDelivery(
                    source_id=source_id,
                    event_id=envelope.senderid,
                    envelope_id=envelope.id,
                    event_type=str(getattr(envelope, "type", "")),
                    accepted_at=now,
                )
            )
