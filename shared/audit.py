"""Append-only audit trail, each row chained to the previous one by a keyed MAC, anchored by signed
checkpoints kept outside the database.

Every officer action and every automatic transition is written here in the same transaction as the
change it records. Each row's `hash` is an HMAC-SHA256, under a key the database does not hold
(SENTINEL_AUDIT_KEY), of its content and the previous row's MAC: editing, inserting or deleting a row in
the middle breaks the chain, and whoever can write the table cannot re-compute it without the key.
A chain can still be cut at its end (the newest rows deleted, or all of them, or the table dropped): so a
checkpoint of the head (seq, MAC, row count), signed with the same key, is written periodically to a file
outside the database and to the log, and `sentinel audit verify` checks the chain against every one.
Each service keeps its own chain (`service` column), so services can share a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import JSON, Column, Connection, Engine, Text, func, text
from sqlmodel import Field, Session, SQLModel, col, select

from shared.clock import Clock
from shared.db import UTCDateTime
from shared.rows import new_row

GENESIS = "0" * 64
log = logging.getLogger(__name__)
DEVELOPMENT_SECRET = b"sentinel-development-audit-key: not a secret, never for a real trial"
PLACEHOLDERS = ("changeme", "change-me", "secret", "placeholder", "example", "dev", "test", "xxx")
_OPTION = "sentinel_audit_key"
BROKEN_LINK = "previous-hash link broken: a row before it was deleted or edited"
EDITED = "content does not match its hash: the row was edited (or signed with another key)"


@dataclass(frozen=True)
class AuditKey:
    """The HMAC key of the audit chain and its checkpoints. Never stored in the database."""

    secret: bytes = field(repr=False)
    development: bool = False

    @classmethod
    def for_development(cls) -> AuditKey:
        return cls(DEVELOPMENT_SECRET, development=True)

    @classmethod
    def parse(cls, value: str) -> AuditKey:
        """A real key: at least 32 characters, not a placeholder (the check is for production settings)."""
        lowered = value.strip().lower()
        if len(value) < 32 or any(lowered.startswith(p) or lowered == p for p in PLACEHOLDERS):
            raise ValueError("the audit key must be at least 32 random characters, not a placeholder")
        return cls(value.encode())

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


def bind_audit_key(engine: Engine, key: AuditKey) -> None:
    """Attach the key to the engine at the composition root: every session on it signs with this key."""
    engine.update_execution_options(**{_OPTION: key})


def bound_audit_key(bind: Engine | Connection) -> AuditKey:
    """The key bound to the engine; the development key when none was (tests, a local demo)."""
    key = bind.get_execution_options().get(_OPTION)
    return key if isinstance(key, AuditKey) else AuditKey.for_development()


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    seq: int | None = Field(default=None, primary_key=True)
    service: str = Field(max_length=40, index=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    actor: str = Field(max_length=200)
    action: str = Field(max_length=80)
    entity: str = Field(max_length=300, index=True)
    detail: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(sa_column=Column(Text, nullable=False))  # HMAC-SHA256 (hex) under the audit key


def entry_hash(
    *,
    prev_hash: str,
    service: str,
    at: datetime,
    actor: str,
    action: str,
    entity: str,
    detail: Mapping[str, Any],
    key: AuditKey | None,
) -> str:
    """The row's MAC under `key`; `key=None` is the unkeyed SHA-256 of rows written before keying."""
    canonical = json.dumps(
        [prev_hash, service, at.isoformat(), actor, action, entity, detail],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode()
    return key.mac(canonical) if key is not None else hashlib.sha256(canonical).hexdigest()


def lock_audit_chain(session: Session, *, service: str) -> None:
    """Serialise writers of one service's chain until the transaction ends.

    Appending reads the chain's last row and links to it; two writers doing that at once would fork the
    chain (on PostgreSQL a `FOR UPDATE` read can return a row that is no longer the last; on SQLite the read
    runs before the write lock). Callers that also lock rows should call this first in the transaction, so
    every transaction takes its locks in the same order and none can deadlock. Re-entrant: taken once per
    transaction (the lock lasts until it ends).
    """
    if _this_transaction(session, ("lock", service)) is not None:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        key = zlib.crc32(f"sentinel-audit:{service}".encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif dialect == "sqlite":
        # A write statement, even one touching no row, makes the transaction take SQLite's write lock now.
        session.execute(text("UPDATE audit_log SET seq = seq WHERE 0"))
    _remember(session, ("lock", service), True)


def _this_transaction(session: Session, what: tuple[str, str]) -> object | None:
    """What this transaction noted under `what` (its audit lock, the chain head it wrote); None once it ended.

    Never inside a savepoint, whose rollback could take a noted head away with it."""
    noted = session.info.get(("sentinel.audit", *what))
    if noted is None or session.in_nested_transaction():
        return None
    transaction, value = noted
    return value if transaction is session.get_transaction() else None


def _remember(session: Session, what: tuple[str, str], value: object) -> None:
    if not session.in_nested_transaction():
        session.info[("sentinel.audit", *what)] = (session.get_transaction(), value)


def append_audit(
    session: Session,
    *,
    service: str,
    actor: str,
    action: str,
    entity: str,
    detail: Mapping[str, Any],
    now: datetime,
) -> AuditEntry:
    """Append one row to the service's chain; the caller's transaction commits it with the change itself."""
    lock_audit_chain(session, service=service)
    key = bound_audit_key(session.connection())
    written = _this_transaction(session, ("head", service))  # the head is this transaction's own last row
    last = (
        written
        if isinstance(written, AuditEntry)
        else session.exec(
            select(AuditEntry).where(AuditEntry.service == service).order_by(col(AuditEntry.seq).desc()).limit(1)
        ).first()
    )
    prev = last.hash if last is not None else GENESIS
    detail_json = json.loads(json.dumps(dict(detail), default=str))
    entry = new_row(
        AuditEntry,
        service=service,
        at=now,
        actor=actor,
        action=action,
        entity=entity,
        detail=detail_json,
        prev_hash=prev,
        hash=entry_hash(
            prev_hash=prev,
            service=service,
            at=now,
            actor=actor,
            action=action,
            entity=entity,
            detail=detail_json,
            key=key,
        ),
    )
    # Not flushed here: the rows of one transaction are inserted in the order added (their seq follows the
    # chain), with whatever else the transaction writes, and the next append links to `entry` without a query.
    session.add(entry)
    _remember(session, ("head", service), entry)
    return entry


@dataclass(frozen=True)
class ChainProblem:
    seq: int | None
    problem: str


# --- checkpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The head of one service's chain at a moment: its seq, its MAC and how many rows led to it."""

    service: str
    seq: int
    hash: str
    rows: int
    at: datetime
    mac: str = ""

    def _message(self) -> bytes:
        return json.dumps(
            ["checkpoint", self.service, self.seq, self.hash, self.rows, self.at.isoformat()], separators=(",", ":")
        ).encode()

    def signed(self, key: AuditKey) -> Checkpoint:
        return Checkpoint(self.service, self.seq, self.hash, self.rows, self.at, key.mac(self._message()))

    def valid(self, key: AuditKey) -> bool:
        return hmac.compare_digest(self.mac, key.mac(self._message()))

    def line(self) -> str:
        return json.dumps(
            {
                "service": self.service,
                "seq": self.seq,
                "hash": self.hash,
                "rows": self.rows,
                "at": self.at.isoformat(),
                "mac": self.mac,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_line(cls, line: str) -> Checkpoint:
        data = json.loads(line)
        return cls(
            service=str(data["service"]),
            seq=int(data["seq"]),
            hash=str(data["hash"]),
            rows=int(data["rows"]),
            at=datetime.fromisoformat(str(data["at"])),
            mac=str(data["mac"]),
        )


def checkpoint_path(directory: Path, service: str) -> Path:
    return directory / f"{service}.audit-checkpoints.jsonl"


def read_checkpoints(directory: Path, *, service: str) -> tuple[list[Checkpoint], list[ChainProblem]]:
    """Every checkpoint in the service's file; a line that cannot be read is itself a problem."""
    path = checkpoint_path(directory, service)
    if not path.exists():
        return [], []
    found: list[Checkpoint] = []
    problems: list[ChainProblem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            found.append(Checkpoint.from_line(line))
        except (ValueError, KeyError, TypeError):
            problems.append(ChainProblem(None, f"{path}:{number}: not a checkpoint (the file was edited)"))
    return found, problems


def head_checkpoint(session: Session, *, service: str, key: AuditKey, now: datetime) -> Checkpoint | None:
    """A signed checkpoint of the chain's head as it is in this transaction; None for an empty chain."""
    last = session.exec(
        select(AuditEntry).where(AuditEntry.service == service).order_by(col(AuditEntry.seq).desc()).limit(1)
    ).first()
    if last is None or last.seq is None:
        return None
    rows = session.exec(
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.service == service, col(AuditEntry.seq) <= last.seq)
    ).one()
    return Checkpoint(service, last.seq, last.hash, int(rows), now).signed(key)


def append_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    """Append one line and sync it to disk; the same line goes to the log, a second copy out of reach."""
    directory.mkdir(parents=True, exist_ok=True)
    line = checkpoint.line()
    with checkpoint_path(directory, checkpoint.service).open("a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())
    log.info("audit checkpoint %s", line)


def write_checkpoint(
    engine: Engine, *, service: str, key: AuditKey, directory: Path, now: datetime
) -> Checkpoint | None:
    """Checkpoint the head unless it is the one last written (an idle service adds no lines)."""
    with Session(engine) as session:
        checkpoint = head_checkpoint(session, service=service, key=key, now=now)
    if checkpoint is None:
        return None
    earlier, _ = read_checkpoints(directory, service=service)
    if earlier and earlier[-1].seq == checkpoint.seq and earlier[-1].hash == checkpoint.hash:
        return None
    append_checkpoint(directory, checkpoint)
    return checkpoint


class AuditCheckpointer:
    """Writes a checkpoint of one service's chain every `interval_seconds`, and a last one when stopping."""

    def __init__(
        self,
        *,
        engine: Engine,
        service: str,
        key: AuditKey,
        directory: Path,
        clock: Clock,
        registry: CollectorRegistry,
        interval_seconds: float,
    ) -> None:
        self._engine = engine
        self._service = service
        self._key = key
        self._directory = directory
        self._clock = clock
        self._interval = interval_seconds
        self.failures = Counter(
            f"sentinel_{service}_audit_checkpoint_failures",
            "Audit checkpoints that could not be written (the chain's tail is unprotected meanwhile)",
            registry=registry,
        )
        self.head = Gauge(
            f"sentinel_{service}_audit_checkpoint_seq", "Seq of the last audit checkpoint written", registry=registry
        )

    def checkpoint(self) -> Checkpoint | None:
        written = write_checkpoint(
            self._engine, service=self._service, key=self._key, directory=self._directory, now=self._clock.now()
        )
        if written is not None:
            self.head.set(written.seq)
        return written

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:
                # Not swallowed: counted (alert on it) and logged; the next interval tries again.
                self.failures.inc()
                log.exception("audit checkpoint of %s failed", self._service)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)


def anchor_audit(
    engine: Engine,
    *,
    service: str,
    key: AuditKey,
    directory: Path,
    interval_seconds: float,
    clock: Clock,
    registry: CollectorRegistry,
) -> AuditCheckpointer:
    """At a composition root: sign the service's audit rows with `key`, and checkpoint its chain's head."""
    bind_audit_key(engine, key)
    if key.development:
        log.warning("%s: the audit chain is signed with the development key; set SENTINEL_AUDIT_KEY", service)
    return AuditCheckpointer(
        engine=engine,
        service=service,
        key=key,
        directory=directory,
        clock=clock,
        registry=registry,
        interval_seconds=interval_seconds,
    )


# --- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainReport:
    rows: int
    problems: list[ChainProblem]
    unkeyed_rows: int = 0  # a prefix written before the chain was keyed (accepted, reported)
    checkpoints: int = 0  # checkpoints checked


def verify_chain(
    engine: Engine, *, service: str, key: AuditKey | None = None, checkpoints: Sequence[Checkpoint] = ()
) -> tuple[int, list[ChainProblem]]:
    """Recompute the chain; returns (rows checked, problems). Empty problems: intact."""
    report = verify_audit(engine, service=service, key=key, checkpoints=checkpoints)
    return report.rows, report.problems


def verify_audit(
    engine: Engine, *, service: str, key: AuditKey | None = None, checkpoints: Sequence[Checkpoint] = ()
) -> ChainReport:
    """Check every link and MAC of the chain, then that every checkpoint's row is there, unchanged, with as
    many rows before it: a chain cut at its end (newest rows, all rows) fails against the last checkpoint."""
    key = key or bound_audit_key(engine)
    problems: list[ChainProblem] = []
    pending = sorted((c for c in checkpoints if c.service == service), key=lambda c: c.seq)
    for cp in pending:
        if not cp.valid(key):
            problems.append(ChainProblem(cp.seq, "checkpoint signature invalid: the checkpoint was edited or forged"))
    pending = [cp for cp in pending if cp.valid(key)]
    checked = len(pending)
    prev = GENESIS
    count = 0
    unkeyed = 0
    keyed_seen = False
    last_seq: int | None = None
    with Session(engine) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.service == service).order_by(col(AuditEntry.seq)))
        for row in rows:
            count += 1
            seq = row.seq or 0
            while pending and pending[0].seq < seq:
                problems.append(_missing(pending.pop(0)))
            if row.prev_hash != prev:
                problems.append(
                    ChainProblem(row.seq, "previous-hash link broken: a row before it was deleted or edited")
                )
            content: dict[str, Any] = {
                "prev_hash": row.prev_hash,
                "service": row.service,
                "at": row.at,
                "actor": row.actor,
                "action": row.action,
                "entity": row.entity,
                "detail": row.detail,
            }
            if hmac.compare_digest(row.hash, entry_hash(**content, key=key)):
                keyed_seen = True
            elif not keyed_seen and row.hash == entry_hash(**content, key=None):
                unkeyed += 1  # written before the chain was keyed: only ever a prefix
            else:
                problems.append(
                    ChainProblem(
                        row.seq, "content does not match its hash: the row was edited (or signed with another key)"
                    )
                )
            while pending and pending[0].seq == seq:
                cp = pending.pop(0)
                if cp.hash != row.hash or cp.rows != count:
                    problems.append(
                        ChainProblem(
                            seq,
                            f"differs from the checkpoint of {cp.at.isoformat()} ({cp.rows} rows then, {count} now): "
                            "rows up to it were deleted or rewritten",
                        )
                    )
            prev = row.hash
            last_seq = seq
    for cp in pending:
        problems.append(_missing(cp, last_seq))
    return ChainReport(rows=count, problems=problems, unkeyed_rows=unkeyed, checkpoints=checked)


def _missing(cp: Checkpoint, last_seq: int | None = None) -> ChainProblem:
    end = f"the chain now ends at seq {last_seq}" if last_seq is not None else "no row is left"
    return ChainProblem(
        cp.seq,
        f"missing: the checkpoint of {cp.at.isoformat()} records {cp.rows} rows up to seq {cp.seq}; {end} "
        "(rows were deleted)",
    )
