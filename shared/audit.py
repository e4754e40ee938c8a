"""Append-only audit trail, each row chained to the previous one by SHA-256.

Every officer action and every automatic transition is written here in the same transaction as the
change it records. Editing or deleting a row breaks the chain, and `sentinel audit verify` finds where.
Each service keeps its own chain (`service` column), so services can share a database.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Engine, Text, text
from sqlmodel import Field, Session, SQLModel, col, select

from shared.db import UTCDateTime

GENESIS = "0" * 64


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
    hash: str = Field(sa_column=Column(Text, nullable=False))


def entry_hash(
    *, prev_hash: str, service: str, at: datetime, actor: str, action: str, entity: str, detail: Mapping[str, Any]
) -> str:
    canonical = json.dumps(
        [prev_hash, service, at.isoformat(), actor, action, entity, detail],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def lock_audit_chain(session: Session, *, service: str) -> None:
    """Serialise writers of one service's chain until the transaction ends.

    Appending reads the chain's last row and links to it; two writers doing that at once would fork the
    chain (on PostgreSQL a `FOR UPDATE` read can return a row that is no longer the last; on SQLite the read
    runs before the write lock). Callers that also lock rows should call this first in the transaction, so
    every transaction takes its locks in the same order and none can deadlock. Re-entrant.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        key = zlib.crc32(f"sentinel-audit:{service}".encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif dialect == "sqlite":
        # A write statement, even one touching no row, makes the transaction take SQLite's write lock now.
        session.execute(text("UPDATE audit_log SET seq = seq WHERE 0"))


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
    last = session.exec(
        select(AuditEntry).where(AuditEntry.service == service).order_by(col(AuditEntry.seq).desc()).limit(1)
    ).first()
    prev = last.hash if last is not None else GENESIS
    detail_json = json.loads(json.dumps(dict(detail), default=str))
    entry = AuditEntry(
        service=service,
        at=now,
        actor=actor,
        action=action,
        entity=entity,
        detail=detail_json,
        prev_hash=prev,
        hash=entry_hash(
            prev_hash=prev, service=service, at=now, actor=actor, action=action, entity=entity, detail=detail_json
        ),
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainProblem:
    seq: int | None
    problem: str


def verify_chain(engine: Engine, *, service: str) -> tuple[int, list[ChainProblem]]:
    """Recompute the chain; returns (rows checked, problems). Empty problems: intact."""
    problems: list[ChainProblem] = []
    prev = GENESIS
    count = 0
    with Session(engine) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.service == service).order_by(col(AuditEntry.seq)))
        for row in rows:
            count += 1
            if row.prev_hash != prev:
                problems.append(
                    ChainProblem(row.seq, "previous-hash link broken: a row before it was deleted or edited")
                )
            expected = entry_hash(
                prev_hash=row.prev_hash,
                service=row.service,
                at=row.at,
                actor=row.actor,
                action=row.action,
                entity=row.entity,
                detail=row.detail,
            )
            if row.hash != expected:
                problems.append(ChainProblem(row.seq, "content does not match its hash: the row was edited"))
            prev = row.hash
    return count, problems
