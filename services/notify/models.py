"""Notify's own tables: alerts (what a person sees), obligations (what must be done by when),
deliveries (each message to each recipient, durable until sent) and each alert's history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from shared.db import UTCDateTime


class Alert(SQLModel, table=True):
    __tablename__ = "notify_alerts"

    id: str = Field(primary_key=True, max_length=64)
    thread_key: str = Field(max_length=500, unique=True)
    kind: str = Field(max_length=40)
    trial_id: str = Field(max_length=64, index=True)
    site_id: str = Field(max_length=200)
    subject_id: str = Field(max_length=200, index=True)
    title: str = Field(max_length=500)
    details: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default="open", max_length=20, index=True)  # open | acknowledged
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    acknowledged_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    acknowledged_by: str | None = Field(default=None, max_length=200)


class Obligation(SQLModel, table=True):
    __tablename__ = "notify_obligations"

    id: str = Field(primary_key=True, max_length=64)
    alert_id: str = Field(foreign_key="notify_alerts.id", max_length=64, index=True)
    kind: str = Field(max_length=40)  # sae_report
    trial_id: str = Field(max_length=64, index=True)
    subject_id: str = Field(max_length=200, index=True)
    description: str = Field(max_length=500)
    clock_started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    clock_basis: str = Field(max_length=20)
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    state: str = Field(default="open", max_length=20, index=True)  # open | completed | cancelled
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    completed_by: str | None = Field(default=None, max_length=200)
    reference: str | None = Field(default=None, max_length=200)


class Delivery(SQLModel, table=True):
    __tablename__ = "notify_deliveries"

    id: str = Field(primary_key=True, max_length=64)
    alert_id: str = Field(foreign_key="notify_alerts.id", max_length=64, index=True)
    channel: str = Field(max_length=20)
    recipient: str = Field(max_length=254)
    subject: str = Field(max_length=500)
    body_text: str = Field(sa_column=Column(Text, nullable=False))
    body_html: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", max_length=20, index=True)  # pending | sent | failed
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    leased_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class AlertHistory(SQLModel, table=True):
    """Append-only: what happened to an alert, automatically or by whom."""

    __tablename__ = "notify_alert_history"

    seq: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(foreign_key="notify_alerts.id", max_length=64, index=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    actor: str = Field(max_length=200)
    action: str = Field(max_length=60)
    detail: str = Field(sa_column=Column(Text, nullable=False))


TABLES = [Alert, Obligation, Delivery, AlertHistory]
