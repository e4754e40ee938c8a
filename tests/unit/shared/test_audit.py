"""Issue 15, defect 2: the audit chain is keyed (HMAC under a key the database does not hold) and anchored by
signed checkpoints outside the database, so a rewritten chain, a cut tail, a deleted service's rows or an
edited checkpoint all fail verification."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, delete, update
from sqlmodel import Session, col, select

from shared.audit import (
    AuditCheckpointer,
    AuditEntry,
    AuditKey,
    anchor_audit,
    append_audit,
    bind_audit_key,
    checkpoint_path,
    entry_hash,
    read_checkpoints,
    verify_audit,
    write_checkpoint,
)
from shared.clock import FakeClock
from shared.db import create_tables
from shared.settings import CommonSettings

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
KEY = AuditKey(b"k" * 40)


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_tables(engine, [AuditEntry])
    bind_audit_key(engine, KEY)
    return engine


def append(db: Engine, n: int, *, service: str = "notify", start: int = 0) -> None:
    with Session(db) as session, session.begin():
        for i in range(start, start + n):
            append_audit(
                session,
                service=service,
                actor="system",
                action="delivered",
                entity=f"alert:{i}",
                detail={"text": f"row {i}"},
                now=T0 + timedelta(seconds=i),
            )


def rows(db: Engine, service: str = "notify") -> list[AuditEntry]:
    with Session(db) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.service == service).order_by(col(AuditEntry.seq))))


def test_a_chain_rewritten_without_the_key_fails(db: Engine) -> None:
    append(db, 5)
    assert verify_audit(db, service="notify").problems == []
    # What anyone who can write the table could do to an unkeyed chain: edit a row, re-hash it and every later
    # row with SHA-256. Without the key, the MACs cannot be recomputed.
    with Session(db) as session, session.begin():
        prev = "0" * 64
        for row in session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))).all():
            if row.seq == 3:
                row.actor = "someone else"
            row.prev_hash = prev
            row.hash = entry_hash(
                prev_hash=prev,
                service=row.service,
                at=row.at,
                actor=row.actor,
                action=row.action,
                entity=row.entity,
                detail=row.detail,
                key=AuditKey(b"a guess at the key, 40 characters long!!"),
            )
            prev = row.hash
            session.add(row)
    problems = verify_audit(db, service="notify").problems
    assert {p.seq for p in problems} == {r.seq for r in rows(db)}
    assert all("content does not match its hash" in p.problem for p in problems)


def test_deleting_the_newest_rows_fails_against_the_checkpoint(db: Engine, tmp_path: Path) -> None:
    append(db, 80)
    checkpoint = write_checkpoint(db, service="notify", key=KEY, directory=tmp_path, now=T0)
    assert checkpoint is not None and checkpoint.rows == 80
    append(db, 5, start=80)  # after the checkpoint: not anchored yet
    newest = [r.seq for r in rows(db)][-55:]
    with Session(db) as session, session.begin():
        session.execute(delete(AuditEntry).where(col(AuditEntry.seq).in_(newest)))
    assert verify_audit(db, service="notify").problems == [], "the chain alone cannot see a cut tail"
    checkpoints, _ = read_checkpoints(tmp_path, service="notify")
    [problem] = verify_audit(db, service="notify", checkpoints=checkpoints).problems
    assert problem.seq == checkpoint.seq
    assert "records 80 rows" in problem.problem and "rows were deleted" in problem.problem


def test_deleting_all_of_a_services_rows_fails(db: Engine, tmp_path: Path) -> None:
    append(db, 4, service="safety")
    append(db, 3)
    write_checkpoint(db, service="notify", key=KEY, directory=tmp_path, now=T0)
    with Session(db) as session, session.begin():
        session.execute(delete(AuditEntry).where(col(AuditEntry.service) == "notify"))
    checkpoints, _ = read_checkpoints(tmp_path, service="notify")
    report = verify_audit(db, service="notify", checkpoints=checkpoints)
    assert report.rows == 0
    [problem] = report.problems
    assert problem.problem.endswith("no row is left (rows were deleted)")
    assert verify_audit(db, service="safety").problems == [], "the other service's chain is untouched"


def test_a_forged_or_edited_checkpoint_fails(db: Engine, tmp_path: Path) -> None:
    append(db, 10)
    write_checkpoint(db, service="notify", key=KEY, directory=tmp_path, now=T0)
    path = checkpoint_path(tmp_path, "notify")
    line = json.loads(path.read_text())
    line["seq"], line["rows"] = line["seq"] - 5, 5  # "there were only 5 rows" to cover a cut
    path.write_text(json.dumps(line) + "\n")
    checkpoints, _ = read_checkpoints(tmp_path, service="notify")
    [problem] = verify_audit(db, service="notify", checkpoints=checkpoints).problems
    assert "checkpoint signature invalid" in problem.problem


def test_a_rewritten_row_behind_a_checkpoint_fails_even_with_a_consistent_chain(db: Engine, tmp_path: Path) -> None:
    append(db, 6)
    checkpoint = write_checkpoint(db, service="notify", key=KEY, directory=tmp_path, now=T0)
    assert checkpoint is not None
    with Session(db) as session, session.begin():
        session.execute(delete(AuditEntry).where(col(AuditEntry.seq) == rows(db)[-1].seq))
    append(db, 1, start=100)  # a new head in place of the deleted one (SQLite even reuses its seq): links and MACs fine
    assert verify_audit(db, service="notify").problems == []
    checkpoints, _ = read_checkpoints(tmp_path, service="notify")
    [problem] = verify_audit(db, service="notify", checkpoints=checkpoints).problems
    assert problem.seq == checkpoint.seq
    assert "rows up to it were deleted or rewritten" in problem.problem or "missing" in problem.problem


def test_rows_written_before_keying_are_accepted_only_as_a_prefix(db: Engine) -> None:
    with Session(db) as session, session.begin():
        prev = "0" * 64
        for i in range(3):
            content = {"service": "notify", "actor": "system", "action": "opened", "entity": f"alert:{i}"}
            digest = entry_hash(prev_hash=prev, at=T0, detail={}, key=None, **content)
            session.add(AuditEntry(at=T0, detail={}, prev_hash=prev, hash=digest, **content))
            prev = digest
    append(db, 2)
    report = verify_audit(db, service="notify")
    assert (report.rows, report.unkeyed_rows, report.problems) == (5, 3, [])
    with Session(db) as session, session.begin():  # an unkeyed row after a keyed one is a forgery
        last = rows(db)[-1]
        forged = entry_hash(
            prev_hash=last.prev_hash,
            service="notify",
            at=last.at,
            actor="x",
            action="y",
            entity="z",
            detail={},
            key=None,
        )
        session.execute(
            update(AuditEntry)
            .where(col(AuditEntry.seq) == last.seq)
            .values(actor="x", action="y", entity="z", detail={}, hash=forged)
        )
    assert [p.seq for p in verify_audit(db, service="notify").problems] == [last.seq]


def test_the_checkpointer_writes_periodically_only_when_the_head_moved_and_once_more_at_stop(
    db: Engine, tmp_path: Path
) -> None:
    append(db, 2)
    clock = FakeClock(T0)
    registry = CollectorRegistry()
    checkpointer = AuditCheckpointer(
        engine=db, service="notify", key=KEY, directory=tmp_path, clock=clock, registry=registry, interval_seconds=60
    )
    assert checkpointer.checkpoint() is not None
    assert checkpointer.checkpoint() is None, "an idle chain adds no line"
    append(db, 1, start=2)

    async def run_until_stopped() -> None:
        stop = asyncio.Event()
        stop.set()  # stopping: the run still writes its checkpoint of the head before it returns
        await checkpointer.run(stop)

    asyncio.run(run_until_stopped())
    checkpoints, problems = read_checkpoints(tmp_path, service="notify")
    assert problems == [] and [c.rows for c in checkpoints] == [2, 3]
    assert registry.get_sample_value("sentinel_notify_audit_checkpoint_seq") == checkpoints[-1].seq
    assert all(c.valid(KEY) and not c.valid(AuditKey.for_development()) for c in checkpoints)


def test_anchoring_binds_the_key_to_the_engine(engine: Engine, tmp_path: Path) -> None:
    create_tables(engine, [AuditEntry])
    anchor_audit(
        engine,
        service="notify",
        key=KEY,
        directory=tmp_path,
        interval_seconds=60,
        clock=FakeClock(T0),
        registry=CollectorRegistry(),
    )
    append(engine, 2)
    assert verify_audit(engine, service="notify", key=KEY).problems == []
    assert len(verify_audit(engine, service="notify", key=AuditKey.for_development()).problems) == 2


def test_production_refuses_a_missing_or_placeholder_key_without_printing_it(clean_env: None) -> None:
    with pytest.raises(ValueError, match="SENTINEL_AUDIT_KEY is required"):
        CommonSettings(environment="production").audit_signing_key()
    for weak in ("changeme", "changeme-changeme-changeme-changeme-00", "short-but-random-x9"):
        with pytest.raises(ValueError, match="at least 32 random characters") as raised:
            CommonSettings(environment="production", audit_key=weak).audit_signing_key()  # type: ignore[arg-type]
        assert weak not in str(raised.value)
    real = "q8Vb2m7ZtR4xK1pW9sYc3nH6jL0fD5gA"
    assert CommonSettings(environment="production", audit_key=real).audit_signing_key().secret == real.encode()  # type: ignore[arg-type]
    assert CommonSettings().audit_signing_key().development, "development runs with the development key"
    assert real not in repr(CommonSettings(audit_key=real))  # type: ignore[arg-type]


def test_appends_in_one_transaction_link_to_each_other_and_a_rolled_back_one_leaves_no_head_behind(
    db: Engine,
) -> None:
    """One transaction takes the chain's lock and reads its head once, then links each row to the one it just
    wrote; a transaction that rolls back leaves nothing the next one links to."""
    append(db, 3)
    append(db, 2, service="safety")
    with Session(db) as session:
        session.begin()
        append_audit(session, service="notify", actor="a", action="x", entity="e:gone", detail={}, now=T0)
        session.rollback()
        entry = append_audit(session, service="notify", actor="a", action="x", entity="e:kept", detail={}, now=T0)
        session.commit()
        kept_prev = entry.prev_hash
    chain = rows(db)
    assert [r.entity for r in chain] == ["alert:0", "alert:1", "alert:2", "e:kept"]
    assert kept_prev == chain[2].hash, "linked to the committed head, not to the rolled-back row"
    assert [r.prev_hash for r in chain[1:]] == [r.hash for r in chain[:-1]]
    assert verify_audit(db, service="notify", key=KEY).problems == []
    assert verify_audit(db, service="safety", key=KEY).problems == []
