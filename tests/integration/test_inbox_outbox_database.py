"""Inbox claims and outbox rows are single statements in the caller's transaction, on SQLite and PostgreSQL:
deterministic message ids dedupe (in one transaction and across them), rows keep the order they were queued
in, a claimed event is seen by already_processed, a second claim of it fails as a transient error, and a
rolled-back transaction leaves neither claim nor message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.engine.interfaces import ExecuteStyle
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from shared.db import create_tables, make_engine
from shared.events import AssessmentMissed, AssessmentMissedData
from shared.inbox import Claim, ProcessedEvent, add_claim, already_processed, claim_event
from shared.kafka import TRANSIENT_ERRORS
from shared.outbox import OutboxMessage, OutboxRows, Outgoing, add_to_outbox

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_tables(engine, [ProcessedEvent, OutboxMessage])
    yield engine
    engine.dispose()


def outgoing(signal_id: str) -> Outgoing:
    data = AssessmentMissedData(
        site_id="101", subject_id="101-001", assessment="day 14", due_from=NOW, due_until=NOW, missing=["lab"]
    )
    envelope = AssessmentMissed(
        id=signal_id, source="/services/safety", subject="101-001", time=NOW, trialid="T", data=data
    )
    return Outgoing(topic="signals", key=b"T:101-001", envelope=envelope)


def queued(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        query = select(col(OutboxMessage.message_id), col(OutboxMessage.producer)).order_by(col(OutboxMessage.seq))
        return [(row[0], row[1]) for row in session.execute(query).all()]


def test_outbox_dedupes_message_ids_and_keeps_queue_order(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        assert add_to_outbox(session, producer="safety", message=outgoing("sig-b"), now=NOW)
        assert add_to_outbox(session, producer="safety", message=outgoing("sig-a"), now=NOW)
        assert not add_to_outbox(session, producer="safety", message=outgoing("sig-b"), now=NOW)
    with Session(engine) as session, session.begin():  # a replayed event queues the same ids again
        assert not add_to_outbox(session, producer="safety", message=outgoing("sig-a"), now=NOW)
        assert add_to_outbox(session, producer="safety", message=outgoing("sig-c"), now=NOW)
    assert queued(engine) == [("sig-b", "safety"), ("sig-a", "safety"), ("sig-c", "safety")]
    with Session(engine) as session:
        row = session.execute(select(OutboxMessage).where(col(OutboxMessage.message_id) == "sig-b")).scalar_one()
        # a missed assessment is a routine signal: it takes the signals' routine lane (shared.lanes)
        assert row.topic == "signals.routine" and row.key == b"T:101-001" and row.sent_at is None
        assert AssessmentMissed.model_validate_json(row.value) == outgoing("sig-b").envelope
        assert row.created_at == NOW


def test_claims_are_seen_by_already_processed_and_a_second_claim_fails_transiently(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        add_claim(session, consumer="notify", claim=Claim("e1", "signals", 0, 7), now=NOW)
        add_claim(session, consumer="notify", claim=Claim("e2", "signals", 1, 8), now=NOW)
        # Seen in the same transaction (the next record of a batch) and after the commit.
        assert already_processed(session, consumer="notify", event_ids=["e1", "e3"]) == {"e1"}
    with Session(engine) as session:
        assert already_processed(session, consumer="notify", event_ids=["e1", "e2", "e3"]) == {"e1", "e2"}
        assert already_processed(session, consumer="safety", event_ids=["e1"]) == set()
        row = session.get(ProcessedEvent, ("notify", "e2"))
        assert row is not None and (row.topic, row.partition, row.offset, row.processed_at) == ("signals", 1, 8, NOW)
    with pytest.raises(IntegrityError) as failed, Session(engine) as session, session.begin():
        # What a replica that checked at the same moment does: its claim fails, and consumers retry.
        add_claim(session, consumer="notify", claim=Claim("e1", "signals", 0, 7), now=NOW)
    assert isinstance(failed.value, TRANSIENT_ERRORS)


def test_a_rolled_back_transaction_leaves_neither_claim_nor_message(engine: Engine) -> None:
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        add_claim(session, consumer="safety", claim=Claim("e1", "clinical", 0, 1), now=NOW)
        add_to_outbox(session, producer="safety", message=outgoing("sig-1"), now=NOW)
        raise RuntimeError("the rule failed after queueing")
    assert queued(engine) == []
    with Session(engine) as session, session.begin():
        assert claim_event(session, consumer="safety", event_id="e1", topic="clinical", partition=0, offset=1, now=NOW)
        assert add_to_outbox(session, producer="safety", message=outgoing("sig-1"), now=NOW)
    assert queued(engine) == [("sig-1", "safety")]


def test_many_rows_go_as_multi_row_statements_on_postgresql(engine: Engine) -> None:
    """A pipeline of a message per row stalled on TCP for the 200 ms persist timer (shared.db.make_engine): on
    PostgreSQL, a batch's outbox rows are one statement (arrays per column) and the ORM's plain inserts of many
    rows are multi-row INSERTs; on both databases every row is stored, in the order queued, with duplicates
    skipped."""
    styles: set[tuple[str, ExecuteStyle]] = set()

    def seen(_conn: object, _cursor: object, statement: str, _params: object, context: Any, _many: bool) -> None:
        if statement.startswith("INSERT"):
            styles.add((statement.split()[2], context.execute_style))

    event.listen(engine, "before_cursor_execute", seen)
    rows = OutboxRows("safety")
    for n in [*range(300), 7]:
        rows.add(outgoing(f"sig-{n:03d}"), now=NOW)
    claims = [
        ProcessedEvent(consumer="safety", event_id=f"e{n}", topic="t", partition=0, offset=n, processed_at=NOW)
        for n in range(300)
    ]
    with Session(engine) as session, session.begin():
        rows.write(session)
        session.add_all(claims)
    assert [message_id for message_id, _ in queued(engine)] == [f"sig-{n:03d}" for n in range(300)]
    with Session(engine) as session:
        assert already_processed(session, consumer="safety", event_ids=["e0", "e299", "e300"]) == {"e0", "e299"}
    if engine.dialect.name == "postgresql":
        many_values = ExecuteStyle.INSERTMANYVALUES
        assert styles == {("outbox", ExecuteStyle.EXECUTE), ("processed_events", many_values)}
