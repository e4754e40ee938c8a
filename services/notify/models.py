"""Notify's own tables: alerts (what a person sees), obligations (what must be done by when),
deliveries (each message to each recipient, durable until sent) and timers (each due action, durable
until fired, so a restart loses no escalation).

An alert's history is not a table of its own: it is the alert's slice of the hash-chained audit trail
(`shared.audit`, entity `alert:<id>`), so each fact is written once and is tamper-evident.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from shared.audit import AuditEntry
from shared.db import UTCDateTime
from shared.tracing import current_traceparent

ALERT_STATES = ("open", "acknowledged", "resolved")
OBLIGATION_STATES = ("open", "overdue", "completed", "cancelled")


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
    state: str = Field(default="open", max_length=20, index=True)  # open | acknowledged | resolved
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    acknowledged_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    acknowledged_by: str | None = Field(default=None, max_length=200)
    # Paging: each (re)open starts a new round at step 0 (the initial notification).
    paged_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    escalation_round: int = 0
    escalation_step: int = 0
    snoozed_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    snoozed_by: str | None = Field(default=None, max_length=200)
    snooze_reason: str | None = Field(default=None, max_length=2000)


class Obligation(SQLModel, table=True):
    __tablename__ = "notify_obligations"

    id: str = Field(primary_key=True, max_length=64)
    alert_id: str = Field(foreign_key="notify_alerts.id", max_length=64, index=True)
    kind: str = Field(max_length=40)  # sae_report | dlt_review | stopping_rule_review
    trial_id: str = Field(max_length=64, index=True)
    subject_id: str = Field(max_length=200, index=True)
    description: str = Field(max_length=500)
    clock_started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    clock_basis: str = Field(max_length=20)
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    state: str = Field(default="open", max_length=20, index=True)  # open | overdue | completed | cancelled
    overdue_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    completed_by: str | None = Field(default=None, max_length=200)
    reference: str | None = Field(default=None, max_length=200)
    cancelled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    cancelled_by: str | None = Field(default=None, max_length=200)
    cancel_reason: str | None = Field(default=None, max_length=2000)


class Delivery(SQLModel, table=True):
    __tablename__ = "notify_deliveries"

    id: str = Field(primary_key=True, max_length=64)
    alert_id: str = Field(foreign_key="notify_alerts.id", max_length=64, index=True)
    channel: str = Field(max_length=20)  # email | webhook
    recipient: str = Field(max_length=254)  # an address, or webhook:<name>
    subject: str = Field(max_length=500)
    body_text: str = Field(sa_column=Column(Text, nullable=False))
    body_html: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", max_length=20, index=True)  # pending | sent | failed | cancelled
    # -2 critical (SAE, SUSAR, DLT...), -1 a live finding (a lab a site has just entered), 0 page (deadlines:
    # escalations, overdue, failover), 1 notice, 2 digest (bundled per recipient): see urgency.py
    urgency: int = Field(default=1, index=True)
    attempts: int = 0  # counted when an attempt starts (committed before the hand-off), not when it ends
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    leased_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    leased_by: str | None = Field(default=None, max_length=64)  # the dispatcher whose heartbeat renews the lease
    # Set when an attempt is handed over, cleared when its outcome is recorded: still set at the next claim
    # means the previous sender stopped mid-attempt (the mail may have gone out).
    attempt_started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # The span that queued it (W3C traceparent): the mail's span joins the SAE's trace from the webhook on.
    trace_context: str | None = Field(default_factory=current_traceparent, max_length=64)


class Timer(SQLModel, table=True):
    """One due action: an escalation step, a reminder, an overdue page, a failover after a failed delivery.

    Ids are deterministic (what, for whom, which step), so scheduling twice writes one row, and the
    deliveries a timer queues derive their ids from it, so even a repeated firing mails nobody twice.
    """

    __tablename__ = "notify_timers"

    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=20)  # escalate | reminder | overdue | failover
    alert_id: str = Field(foreign_key="notify_alerts.id", max_length=64, index=True)
    obligation_id: str | None = Field(default=None, foreign_key="notify_obligations.id", max_length=64, index=True)
    step: int = 0  # escalation step, reminder number or overdue repeat number
    round: int = 0  # the alert's escalation round (escalate timers only)
    note: str = Field(default="", max_length=500)
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    state: str = Field(default="pending", max_length=20, index=True)  # pending | fired | skipped | cancelled
    leased_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    fired_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


TABLES = [Alert, Obligation, Delivery, Timer, AuditEntry]
