"""Queries on ingest's tables. Keyword-only and never committing: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, case, delete, func, or_
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from services.ingest.models import (
    UNMAPPABLE,
    AcceptedDelivery,
    RecordVersion,
    RedcapCursor,
    RedcapTrigger,
    WebhookDelivery,
)
from shared.events import ClinicalEnvelopeBase

CHUNK = 500
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class KnownVersion:
    """What the hot path needs of a record's newest published version."""

    source_version: str | None
    canonical_version: int | None
    content_hash: str | None
    first_received_at: datetime


@dataclass(frozen=True)
class Known:
    """What the database already knows about one request: delivery ids, record versions, its webhook-id."""

    deliveries: set[str]
    versions: dict[str, KnownVersion]
    webhook_body_sha256: str | None


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


@dataclass(frozen=True)
class AcceptedWrite:
    """What one request must make durable after the broker acknowledged its events."""

    source_id: str
    envelopes: Sequence[ClinicalEnvelopeBase]
    updates: Sequence[VersionUpdate]
    now: datetime
    webhook_id: str | None = None
    webhook_body_sha256: str | None = None


_ACCEPTED = AcceptedDelivery.__table__  # type: ignore[attr-defined]
_VERSIONS = RecordVersion.__table__  # type: ignore[attr-defined]
_WEBHOOKS = WebhookDelivery.__table__  # type: ignore[attr-defined]


def known_for(
    connection: Connection,
    *,
    source_id: str,
    event_ids: Sequence[str],
    record_keys: Sequence[str],
    webhook_id: str | None,
) -> Known:
    """One read for the whole request, on the driver's cursor with plain parameterised SQL.

    This runs for every request; through SQLAlchemy's statement machinery it cost more CPU than the queries
    themselves (profiled), so it speaks the driver's own parameter style instead.
    """
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        deliveries: set[str] = set()
        for ids in _chunks(sorted(set(event_ids))):
            cursor.execute(
                f"SELECT event_id FROM ingest_accepted WHERE source_id = {mark} AND event_id IN ({_marks(mark, ids)})",
                (source_id, *ids),
            )
            deliveries.update(row[0] for row in cursor.fetchall())
        versions: dict[str, KnownVersion] = {}
        for keys in _chunks(sorted(set(record_keys))):
            cursor.execute(
                "SELECT record_key, source_version, canonical_version, content_hash, first_received_at"
                f" FROM ingest_record_versions WHERE source_id = {mark} AND record_key IN ({_marks(mark, keys)})",
                (source_id, *keys),
            )
            for key, source_version, canonical_version, content_hash, first in cursor.fetchall():
                versions[key] = KnownVersion(source_version, canonical_version, content_hash, _utc(first))
        body = None
        if webhook_id is not None:
            cursor.execute(
                f"SELECT body_sha256 FROM ingest_webhook_deliveries WHERE source_id = {mark} AND webhook_id = {mark}",
                (source_id, webhook_id),
            )
            found = cursor.fetchone()
            body = found[0] if found else None
    finally:
        cursor.close()
    return Known(deliveries, versions, body)


def _marks(mark: str, values: Sequence[object]) -> str:
    return ", ".join([mark] * len(values))


def _utc(value: datetime | str) -> datetime:
    """What `UTCDateTime` stored: naive UTC text on SQLite, an aware timestamp on PostgreSQL."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@cache
def _statements(dialect: str) -> tuple[Any, Any, Any]:
    """The three writes of an accepted request, built once per dialect and executed with executemany."""
    insert = postgres_insert if dialect == "postgresql" else sqlite_insert
    accepted = insert(_ACCEPTED).on_conflict_do_nothing()
    webhooks = insert(_WEBHOOKS).on_conflict_do_nothing()
    upsert = insert(_VERSIONS)
    new, old = upsert.excluded, _VERSIONS.c
    versions = upsert.on_conflict_do_update(
        index_elements=[old.source_id, old.record_key],
        set_={
            # forwards only: a concurrent request may have moved the record further already
            "source_version": case(
                (
                    and_(
                        new.source_version.is_not(None),
                        or_(old.source_version.is_(None), new.source_version > old.source_version),
                    ),
                    new.source_version,
                ),
                else_=old.source_version,
            ),
            "canonical_version": case(
                (
                    and_(
                        new.canonical_version.is_not(None),
                        or_(old.canonical_version.is_(None), new.canonical_version > old.canonical_version),
                    ),
                    new.canonical_version,
                ),
                else_=old.canonical_version,
            ),
            "content_hash": func.coalesce(new.content_hash, old.content_hash),
            "retracted": new.retracted,
            "updated_at": new.updated_at,
        },
    )
    return accepted, versions, webhooks


def save_accepted(connection: Connection, *, writes: Sequence[AcceptedWrite]) -> None:
    """Record the accepted deliveries, move each record's version forwards, keep webhook ids: three executemany.

    Several requests' writes share this one transaction; their updates of one record are merged first (forwards
    only, the last content and status win, the first receipt is kept) and rows are written in key order, so
    concurrent writers lock them in one order.
    """
    accepted, versions, webhooks = _statements(connection.dialect.name)
    deliveries = [
        {
            "source_id": write.source_id,
            "event_id": envelope.senderid,
            "envelope_id": envelope.id,
            "event_type": str(getattr(envelope, "type", "")),
            "accepted_at": write.now,
        }
        for write in writes
        for envelope in write.envelopes
    ]
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for write in writes:
        for update in write.updates:
            key = (write.source_id, update.record_key)
            merged[key] = _merge(merged.get(key), write.source_id, update, write.now)
    hooks = {
        (write.source_id, write.webhook_id): {
            "source_id": write.source_id,
            "webhook_id": write.webhook_id,
            "body_sha256": write.webhook_body_sha256,
            "accepted_at": write.now,
        }
        for write in writes
        if write.webhook_id is not None and write.envelopes
    }
    if deliveries:
        connection.execute(accepted, deliveries)
    if merged:
        connection.execute(versions, [merged[key] for key in sorted(merged)])
    if hooks:
        connection.execute(webhooks, [hooks[key] for key in sorted(hooks)])


def _merge(row: dict[str, Any] | None, source_id: str, update: VersionUpdate, now: datetime) -> dict[str, Any]:
    if row is None:
        return {
            "source_id": source_id,
            "record_key": update.record_key,
            "source_version": update.source_version,
            "canonical_version": update.canonical_version,
            "record_type": update.record_type,
            "record_id": update.record_id,
            "trial": update.trial,
            "subject": update.subject,
            "site": update.site,
            "retracted": update.retracted,
            "content_hash": update.content_hash,
            "first_received_at": update.first_received_at,
            "updated_at": now,
        }
    if update.source_version is not None and (
        row["source_version"] is None or update.source_version > row["source_version"]
    ):
        row["source_version"] = update.source_version
    if update.canonical_version is not None:
        row["canonical_version"] = max(row["canonical_version"] or 0, update.canonical_version)
    if update.content_hash is not None:
        row["content_hash"] = update.content_hash
    row["retracted"] = update.retracted
    row["updated_at"] = now
    return row


def purge_deliveries(session: Session, *, accepted_before: datetime) -> int:
    """Forget delivery ids and webhook ids older than the retention; record versions still stop stale replays."""
    result = session.execute(delete(AcceptedDelivery).where(col(AcceptedDelivery.accepted_at) < accepted_before))
    session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.accepted_at) < accepted_before))
    return int(getattr(result, "rowcount", 0) or 0)


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
