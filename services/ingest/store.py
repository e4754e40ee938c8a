"""Queries on ingest's tables. Keyword-only and never committing: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from services.ingest.models import UNMAPPABLE, AcceptedDelivery, RecordVersion, RedcapCursor, RedcapTrigger
from shared.events import ClinicalEnvelopeBase

CHUNK = 500
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def already_accepted(session: Session, *, source_id: str, event_ids: Iterable[str]) -> set[str]:
    ids = list(event_ids)
    found: set[str] = set()
    for chunk in _chunks(ids):
        query = select(AcceptedDelivery.event_id).where(
            AcceptedDelivery.source_id == source_id, col(AcceptedDelivery.event_id).in_(chunk)
        )
        found.update(session.exec(query).all())
    return found


def _insert_ignoring_conflicts(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """One statement per chunk; a row a concurrent request inserted first is left as it is."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgres_insert if dialect == "postgresql" else sqlite_insert
    for chunk in _chunks(rows):
        session.execute(insert(table).values(list(chunk)).on_conflict_do_nothing())


def record_accepted(
    session: Session, *, source_id: str, envelopes: Sequence[ClinicalEnvelopeBase], now: datetime
) -> None:
    rows = [
        {
            "source_id": source_id,
            "event_id": envelope.senderid,
            "envelope_id": envelope.id,
            "event_type": str(getattr(envelope, "type", "")),
            "accepted_at": now,
        }
        for envelope in envelopes
    ]
    _insert_ignoring_conflicts(session, AcceptedDelivery.__table__, rows)  # type: ignore[attr-defined]


def purge_deliveries(session: Session, *, accepted_before: datetime) -> int:
    """Forget delivery ids older than the retention; the record versions still stop stale replays."""
    result = session.execute(delete(AcceptedDelivery).where(col(AcceptedDelivery.accepted_at) < accepted_before))
    return int(getattr(result, "rowcount", 0) or 0)


def record_versions(
    session: Session, *, source_id: str, record_keys: Iterable[str], for_update: bool = False
) -> dict[str, RecordVersion]:
    keys = sorted(set(record_keys))  # sorted: concurrent writers lock rows in one order, so never deadlock
    found: dict[str, RecordVersion] = {}
    for chunk in _chunks(keys):
        query = select(RecordVersion).where(
            RecordVersion.source_id == source_id, col(RecordVersion.record_key).in_(chunk)
        )
        if for_update:
            query = query.order_by(col(RecordVersion.record_key)).with_for_update()
        found.update({row.record_key: row for row in session.exec(query).all()})
    return found


@dataclass(frozen=True)
class VersionUpdate:
    record_key: str
    source_version: str | None
    canonical_version: int | None
    record_type: str
    record_id: str
    trial: str
    subject: str
    site: str
    retracted: bool
    first_received_at: datetime
    content_hash: str | None = None


def save_versions(session: Session, *, source_id: str, updates: Sequence[VersionUpdate], now: datetime) -> None:
    """Move each record's newest version forwards (never backwards); keep its first receipt time.

    The events are already on the broker when this runs, so a concurrent request that created the same record
    first must not make it fail: missing rows are inserted ignoring conflicts, then locked and moved forwards.
    """
    if not updates:
        return
    first = {
        u.record_key: {
            "source_id": source_id,
            "record_key": u.record_key,
            "record_type": u.record_type,
            "record_id": u.record_id,
            "trial": u.trial,
            "subject": u.subject,
            "site": u.site,
            "retracted": False,
            "first_received_at": u.first_received_at,
            "updated_at": now,
        }
        for u in updates
    }
    rows = [first[key] for key in sorted(first)]
    _insert_ignoring_conflicts(session, RecordVersion.__table__, rows)  # type: ignore[attr-defined]
    existing = record_versions(session, source_id=source_id, record_keys=list(first), for_update=True)
    for update in updates:
        row = existing[update.record_key]
        if update.source_version is not None and (
            row.source_version is None or update.source_version > row.source_version
        ):
            row.source_version = update.source_version
        if update.canonical_version is not None:
            row.canonical_version = max(row.canonical_version or 0, update.canonical_version)
        if update.content_hash is not None:
            row.content_hash = update.content_hash
        row.retracted = update.retracted
        row.updated_at = now
        session.add(row)


def subject_records(session: Session, *, source_id: str, trial: str, subject: str) -> list[RecordVersion]:
    query = select(RecordVersion).where(
        RecordVersion.source_id == source_id, RecordVersion.trial == trial, RecordVersion.subject == subject
    )
    return list(session.exec(query).all())


def add_trigger(
    session: Session, *, source_id: str, record: str, instrument: str, event: str | None, now: datetime
) -> RedcapTrigger:
    trigger = RedcapTrigger(
        source_id=source_id, record=record, instrument=instrument, event=event, received_at=now, next_attempt_at=now
    )
    session.add(trigger)
    session.flush()
    return trigger


def add_unmappable(
    session: Session, *, source_id: str, record: str, instrument: str, event: str | None, error: str, now: datetime
) -> RedcapTrigger:
    """A form a reconciliation pull could not map, kept beside the triggers so one list shows what to correct."""
    trigger = RedcapTrigger(
        source_id=source_id,
        record=record,
        instrument=instrument,
        event=event,
        state=UNMAPPABLE,
        attempts=1,
        last_error=error[:2000],
        received_at=now,
        next_attempt_at=now,
        processed_at=now,
    )
    session.add(trigger)
    return trigger


def due_triggers(session: Session, *, source_id: str, now: datetime, limit: int = 100) -> list[RedcapTrigger]:
    query = (
        select(RedcapTrigger)
        .where(
            RedcapTrigger.source_id == source_id,
            RedcapTrigger.state == "pending",
            col(RedcapTrigger.next_attempt_at) <= now,
        )
        .order_by(col(RedcapTrigger.id))
        .limit(limit)
    )
    return list(session.exec(query).all())


def pending_triggers(session: Session) -> int:
    return len(session.exec(select(RedcapTrigger.id).where(RedcapTrigger.state == "pending")).all())


def get_cursor(session: Session, *, source_id: str) -> RedcapCursor | None:
    return session.get(RedcapCursor, source_id)


def set_cursor(session: Session, *, source_id: str, reconciled_from: datetime, now: datetime) -> None:
    cursor = session.get(RedcapCursor, source_id) or RedcapCursor(
        source_id=source_id, reconciled_from=reconciled_from, last_run_at=now
    )
    cursor.reconciled_from = reconciled_from
    cursor.last_run_at = now
    session.add(cursor)
