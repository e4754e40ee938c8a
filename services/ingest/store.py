"""Queries on ingest's tables. Keyword-only and never committing: the caller owns the transaction."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Boolean, Connection, Dialect, Engine, delete
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection
from sqlmodel import Session, col, select

from services.ingest.models import (
    UNMAPPABLE,
    AcceptedDelivery,
    RecordVersion,
    RedcapCursor,
    RedcapTrigger,
    WebhookDelivery,
)
from shared.db import UTCDateTime
from shared.events import ClinicalEnvelopeBase

CHUNK = 500
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class KnownVersion(NamedTuple):
    """What the hot path needs of a record's newest published version (a named tuple: one is made per record of
    every post, and a frozen dataclass's initialiser cost several times a tuple's)."""

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


class VersionUpdate(NamedTuple):
    """How one record's row moves forwards (a named tuple, as `KnownVersion`: one per record of every post)."""

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


def known_for(
    connection: Connection,
    *,
    source_id: str,
    event_ids: Sequence[str],
    record_keys: Sequence[str],
    webhook_id: str | None,
) -> Known:
    """`read_known` on a connection the caller holds (tests; a caller inside a transaction)."""
    with _driver_cursor(connection.connection.dbapi_connection, connection.dialect) as cursor:
        return _known(cursor, connection.dialect, source_id, event_ids, record_keys, webhook_id)


def read_known(
    engine: Engine,
    *,
    source_id: str,
    event_ids: Sequence[str],
    record_keys: Sequence[str],
    webhook_id: str | None,
) -> Known:
    """One read for the whole request, on a pooled driver connection with plain parameterised SQL.

    This runs for every request; through SQLAlchemy's statement machinery, and then through a `Connection`
    around the pooled one, it cost more CPU than the queries themselves (profiled), so it checks out the
    driver's connection and speaks its parameter style. A connection that failed is dropped from the pool.
    """
    dbapi = engine.dialect.loaded_dbapi
    try:
        pooled = engine.raw_connection()
    except dbapi.Error as exc:  # `Engine.connect` would raise it as SQLAlchemy's; the raw checkout does not
        raise DBAPIError.instance(None, None, exc, dbapi.Error, dialect=engine.dialect) from exc
    try:
        with _driver_cursor(pooled.dbapi_connection, engine.dialect) as cursor:
            return _known(cursor, engine.dialect, source_id, event_ids, record_keys, webhook_id)
    except DBAPIError:
        pooled.invalidate()
        raise
    finally:
        pooled.close()


class HeldReader:
    """SQLite only: the event loop's `read_known`, on one driver connection kept checked out for the app's life.

    Checking a connection out of the pool and back in (with its reset) cost as much as the lookup itself, on the
    event loop of every post. The connection only reads, so it never holds a transaction: each SELECT is its own
    snapshot of what is committed, as on a fresh connection. A connection that failed is dropped and the next read
    checks out another; `close` (at shutdown, or when the reader is collected) returns it to the pool.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._held: PoolProxiedConnection | None = None
        self._release: weakref.finalize[Any, Any] | None = None

    def read_known(
        self, *, source_id: str, event_ids: Sequence[str], record_keys: Sequence[str], webhook_id: str | None
    ) -> Known:
        held = self._held if self._held is not None else self._checkout()
        dbapi_connection = held.dbapi_connection
        try:
            with _driver_cursor(dbapi_connection, self._engine.dialect) as cursor:
                known = _known(cursor, self._engine.dialect, source_id, event_ids, record_keys, webhook_id)
            if dbapi_connection is not None and getattr(dbapi_connection, "in_transaction", False):
                dbapi_connection.rollback()  # never, after SELECTs alone; as the pool's reset would
            return known
        except DBAPIError:
            self._drop(invalidate=True)
            raise

    def close(self) -> None:
        self._drop(invalidate=False)

    def _checkout(self) -> PoolProxiedConnection:
        dbapi = self._engine.dialect.loaded_dbapi
        try:
            held = self._engine.raw_connection()
        except dbapi.Error as exc:
            raise DBAPIError.instance(None, None, exc, dbapi.Error, dialect=self._engine.dialect) from exc
        self._held = held
        self._release = weakref.finalize(self, _give_back, held, invalidate=False)
        return held

    def _drop(self, *, invalidate: bool) -> None:
        held, release = self._held, self._release
        self._held = self._release = None
        if release is not None:
            release.detach()
        if held is not None:
            _give_back(held, invalidate=invalidate)


def _give_back(held: PoolProxiedConnection, *, invalidate: bool) -> None:
    with suppress(Exception):  # a dead connection may fail to close; the pool has forgotten it either way
        if invalidate:
            held.invalidate()
        held.close()


def _known(
    cursor: Any,
    dialect: Dialect,
    source_id: str,
    event_ids: Sequence[str],
    record_keys: Sequence[str],
    webhook_id: str | None,
) -> Known:
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    all_ids, all_keys = sorted(set(event_ids)), sorted(set(record_keys))
    if len(all_ids) <= CHUNK and len(all_keys) <= CHUNK:
        return _known_at_once(cursor, mark, source_id, all_ids, all_keys, webhook_id)
    deliveries: set[str] = set()
    for ids in _chunks(all_ids):
        cursor.execute(
            f"SELECT event_id FROM ingest_accepted WHERE source_id = {mark} AND event_id IN ({_marks(mark, ids)})",
            (source_id, *ids),
        )
        deliveries.update(row[0] for row in cursor.fetchall())
    versions: dict[str, KnownVersion] = {}
    for keys in _chunks(all_keys):
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
    return Known(deliveries, versions, body)


def _known_at_once(
    cursor: Any, mark: str, source_id: str, ids: Sequence[str], keys: Sequence[str], webhook_id: str | None
) -> Known:
    """The three lookups of `_known` as one statement (the common case: one chunk of each): a statement each cost
    three times as much as the rows they read (measured on SQLite, on the event loop of every post)."""
    parameters: list[str] = []
    if ids:
        parameters += (source_id, *ids)
    if keys:
        parameters += (source_id, *keys)
    if webhook_id is not None:
        parameters += (source_id, webhook_id)
    cursor.execute(_known_statement(mark, len(ids), len(keys), webhook_id is not None), parameters)
    deliveries: set[str] = set()
    versions: dict[str, KnownVersion] = {}
    body = None
    for part, name, source_version, canonical_version, content_hash, first in cursor.fetchall():
        if part == 0:
            deliveries.add(name)
        elif part == 1:
            versions[name] = KnownVersion(source_version, canonical_version, content_hash, _utc(first))
        else:
            body = name
    return Known(deliveries, versions, body)


@lru_cache(maxsize=256)  # by how many ids and keys a request has: a few shapes recur (1, 100, ...)
def _known_statement(mark: str, ids: int, keys: int, webhook: bool) -> str:
    """Rows tagged 0 (a known delivery id), 1 (a record's newest version), 2 (the webhook-id's body hash).
    An empty IN () is not SQL everywhere: a part with nothing to look up is left out."""
    parts = []
    if ids:
        parts.append(
            "SELECT 0, event_id, NULL, NULL, NULL, NULL FROM ingest_accepted"
            f" WHERE source_id = {mark} AND event_id IN ({', '.join([mark] * ids)})"
        )
    if keys:
        parts.append(
            "SELECT 1, record_key, source_version, canonical_version, content_hash, first_received_at"
            f" FROM ingest_record_versions WHERE source_id = {mark} AND record_key IN ({', '.join([mark] * keys)})"
        )
    if webhook:
        parts.append(
            "SELECT 2, body_sha256, NULL, NULL, NULL, NULL FROM ingest_webhook_deliveries"
            f" WHERE source_id = {mark} AND webhook_id = {mark}"
        )
    if not parts:
        return "SELECT 0, '', NULL, NULL, NULL, NULL WHERE 1 = 0"
    return " UNION ALL ".join(parts)


@contextmanager
def _driver_cursor(dbapi_connection: Any, dialect: Dialect) -> Iterator[Any]:
    """A cursor on the driver's connection; its errors are raised as SQLAlchemy's (an unreachable database
    is then `sqlalchemy.exc.OperationalError` wherever it happens, which the services answer with 503)."""
    dbapi = dialect.loaded_dbapi
    cursor = dbapi_connection.cursor()
    try:
        yield cursor
    except dbapi.Error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi.Error, dialect=dialect) from exc
    finally:
        with suppress(Exception):  # closing a cursor of a dead connection may fail too
            cursor.close()


def _marks(mark: str, values: Sequence[object]) -> str:
    return ", ".join([mark] * len(values))


def _utc(value: datetime | str) -> datetime:
    """What `UTCDateTime` stored: naive UTC text on SQLite, an aware timestamp on PostgreSQL."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_VERSION_COLUMNS = (
    "source_id",
    "record_key",
    "source_version",
    "canonical_version",
    "record_type",
    "record_id",
    "trial",
    "subject",
    "site",
    "retracted",
    "content_hash",
    "first_received_at",
    "updated_at",
)
_FORWARDS = (
    "CASE WHEN excluded.{c} IS NOT NULL AND (ingest_record_versions.{c} IS NULL"
    " OR excluded.{c} > ingest_record_versions.{c}) THEN excluded.{c} ELSE ingest_record_versions.{c} END"
)


ROWS_PER_STATEMENT = 100
"""Rows per multi-row INSERT. Each statement is one driver call: with executemany every row was a call of its own,
and on SQLite each call gives up the GIL and must take it back from the busy event loop (up to the 5 ms switch
interval every time), which made a 100-event request's commit the longest wait of the post (measured)."""


@dataclass(frozen=True)
class _Insert:
    """`head` + n times `row` (comma-separated) + `tail`; a statement per row count, built once."""

    head: str
    row: str
    tail: str

    def rows(self, count: int) -> str:
        return _statement(self, count)


@lru_cache(maxsize=64)  # full chunks share one statement; the driver caches each prepared one by its text
def _statement(insert: _Insert, count: int) -> str:
    return insert.head + ", ".join([insert.row] * count) + insert.tail


@dataclass(frozen=True)
class _Writes:
    """The three writes of accepted requests as driver SQL, built once per dialect."""

    accepted: _Insert
    versions: _Insert
    webhooks: _Insert
    moment: Callable[[datetime], Any]
    flag: Callable[[bool], Any]


@lru_cache(maxsize=8)  # one per engine's dialect; bounded, since tests build many engines
def _writes(dialect: Dialect) -> _Writes:
    mark = "?" if dialect.paramstyle == "qmark" else "%s"

    def row(columns: int) -> str:
        return "(" + ", ".join([mark] * columns) + ")"

    moment = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)  # the very text SQLAlchemy stores
    flag = Boolean().dialect_impl(dialect).bind_processor(dialect)
    return _Writes(
        accepted=_Insert(
            "INSERT INTO ingest_accepted (source_id, event_id, envelope_id, event_type, accepted_at) VALUES ",
            row(5),
            " ON CONFLICT DO NOTHING",
        ),
        versions=_Insert(
            f"INSERT INTO ingest_record_versions ({', '.join(_VERSION_COLUMNS)}) VALUES ",
            row(len(_VERSION_COLUMNS)),
            " ON CONFLICT (source_id, record_key) DO UPDATE SET"  # forwards only: another request may be ahead
            f" source_version = {_FORWARDS.format(c='source_version')},"
            f" canonical_version = {_FORWARDS.format(c='canonical_version')},"
            " content_hash = COALESCE(excluded.content_hash, ingest_record_versions.content_hash),"
            " retracted = excluded.retracted, updated_at = excluded.updated_at",
        ),
        webhooks=_Insert(
            "INSERT INTO ingest_webhook_deliveries (source_id, webhook_id, body_sha256, accepted_at) VALUES ",
            row(4),
            " ON CONFLICT DO NOTHING",
        ),
        moment=moment or (lambda value: value),
        flag=flag or (lambda value: value),
    )


def _insert(cursor: Any, insert: _Insert, rows: Sequence[tuple[Any, ...]]) -> None:
    """The rows in statements of at most ROWS_PER_STATEMENT rows. An upserted key must appear once per statement
    (PostgreSQL refuses to update a row twice in one command): versions are merged per key before."""
    for chunk in _chunks(rows, ROWS_PER_STATEMENT):
        cursor.execute(insert.rows(len(chunk)), [value for row in chunk for value in row])


def save_accepted(connection: Connection, *, writes: Sequence[AcceptedWrite]) -> None:
    """Record the accepted deliveries, move each record's version forwards, keep webhook ids: multi-row inserts.

    Several requests' writes share this one transaction; their updates of one record are merged first (forwards
    only, the last content and status win, the first receipt is kept) and rows are written in key order, so
    concurrent writers lock them in one order. Plain driver SQL: SQLAlchemy's per-row parameter processing cost
    more than the inserts themselves (profiled).
    """
    sql = _writes(connection.dialect)
    stored: dict[datetime, Any] = {}  # a request's rows share one receipt time: convert each moment once

    def moment(value: datetime) -> Any:
        text = stored.get(value)
        if text is None:
            text = stored[value] = sql.moment(value)
        return text

    deliveries = [
        (write.source_id, envelope.senderid, envelope.id, str(getattr(envelope, "type", "")), moment(write.now))
        for write in writes
        for envelope in write.envelopes
    ]
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for write in writes:
        for update in write.updates:
            key = (write.source_id, update.record_key)
            merged[key] = _merge(merged.get(key), write.source_id, update, write.now)
    versions = [
        (
            row["source_id"],
            row["record_key"],
            row["source_version"],
            row["canonical_version"],
            row["record_type"],
            row["record_id"],
            row["trial"],
            row["subject"],
            row["site"],
            sql.flag(row["retracted"]),
            row["content_hash"],
            moment(row["first_received_at"]),
            moment(row["updated_at"]),
        )
        for row in (merged[key] for key in sorted(merged))
    ]
    hooks = sorted(
        {
            (write.source_id, write.webhook_id): (
                write.source_id,
                write.webhook_id,
                write.webhook_body_sha256,
                moment(write.now),
            )
            for write in writes
            if write.webhook_id is not None and write.envelopes
        }.values()
    )
    with _driver_cursor(connection.connection.dbapi_connection, connection.dialect) as cursor:
        _insert(cursor, sql.accepted, deliveries)
        _insert(cursor, sql.versions, versions)
        _insert(cursor, sql.webhooks, hooks)


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
    """A subject's records from one source, by a scan of the source's rows: only a REDCap record deleted at the
    source asks, rarely, and an index on the subject made every accepted record write twice the pages."""
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
