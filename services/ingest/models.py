"""Ingest's own table: which sender ids each source has had accepted (the first level of idempotency)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime


class AcceptedDelivery(SQLModel, table=True):
    __tablename__ = "ingest_accepted"

    source_id: str = Field(primary_key=True, max_length=100)
    event_id: str = Field(primary_key=True, max_length=200)
    envelope_id: str = Field(max_length=64)
    event_type: str = Field(max_length=40)
    accepted_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


TABLES = [AcceptedDelivery]
