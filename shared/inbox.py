"""Inbox (tracking) rows: inserted in the same transaction as the state they produce.

A replayed or re-delivered message finds its row and becomes a no-op: exactly-once effects without
Kafka transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Column, Table
from sqlmodel import Field, Session, SQLModel, col, select

from shared.bulk_insert import insert_rows
from shared.db import UTCDateTime, one_of


class ProcessedEvent(SQLModel, table=True):
    __tablename__ = "processed_events"

    consumer: str = Field(primary_key=True, max_length=100)
    event_id: str = Field(primary_key=True, max_length=200)
    topic: str = Field(max_length=250)
    partition: int
    offset: int
    processed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


def claim_event(
    session: Session, *, consumer: str, event_id: str, topic: str, partition: int, offset: int, now: datetime
) -> bool:
    """True if this consumer has not processed the event before (and now has, once the caller commits)."""
    if already_processed(session, consumer=consumer, event_ids=[event_id]):
        return False
    add_claim(session, consumer=consumer, claim=Claim(event_id, topic, partition, offset), now=now)
    return True


class Claim(NamedTuple):
    event_id: str
    topic: str
    partition: int
    offset: int


def already_processed(session: Session, *, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """The ids among these that this consumer has processed: one query for a whole batch."""
    query = select(col(ProcessedEvent.event_id)).where(
        col(ProcessedEvent.consumer) == consumer, one_of(session, col(ProcessedEvent.event_id), sorted(set(event_ids)))
    )
    return set(session.exec(query).all())


_TABLE: Table = ProcessedEvent.__table__  # type: ignore[attr-defined]


def add_claim(session: Session, *, consumer: str, claim: Claim, now: datetime) -> None:
    """Claim an event the caller checked is new (see already_processed); processed once the caller commits.

    Written at once in the caller's transaction (a statement, not an ORM object waiting for a flush). A replica
    claiming the same id at the same moment makes this insert (or the commit) fail with an integrity error,
    which consumers treat as transient: the retry finds the event processed.
    """
    add_claims(session, consumer=consumer, claims=[claim], now=now)


def add_claims(session: Session, *, consumer: str, claims: Sequence[Claim], now: datetime) -> None:
    """Claim a batch's events in one statement (COPY on PostgreSQL); see `add_claim`."""
    if not claims:
        return
    insert_rows(
        session.connection(),
        _TABLE,
        [
            {
                "consumer": consumer,
                "event_id": claim.event_id,
                "topic": claim.topic,
                "partition": claim.partition,
                "offset": claim.offset,
                "processed_at": now,
            }
            for claim in claims
        ],
    )
