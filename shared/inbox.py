"""Inbox (tracking) rows: inserted in the same transaction as the state they produce.

A replayed or re-delivered message finds its row and becomes a no-op: exactly-once effects without
Kafka transactions.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, Session, SQLModel

from shared.db import UTCDateTime


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
    if session.get(ProcessedEvent, (consumer, event_id)) is not None:
        return False
    session.add(
        ProcessedEvent(
            consumer=consumer, event_id=event_id, topic=topic, partition=partition, offset=offset, processed_at=now
        )
    )
    session.flush()
    return True
