"""Ingest's own tables: accepted deliveries, the newest version seen per record, and REDCap triggers.

Two levels of idempotency live here: `AcceptedDelivery` (the sender's delivery id, purged after the retention)
and `RecordVersion` (the newest version of each clinical record, so an older replay never overwrites it).
"""

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
    accepted_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class WebhookDelivery(SQLModel, table=True):
    """A Standard Webhooks `webhook-id` with the SHA-256 of the body first accepted under it.

    The spec makes the id the idempotency key of one message: a resend carries the same id and the same body.
    The same id with another body is refused (409), never taken for a duplicate: what differs might be an SAE.
    Ids longer than the column are stored as a hash (`fitted_webhook_id`). Purged with the delivery ids.
    """

    __tablename__ = "ingest_webhook_deliveries"

    source_id: str = Field(primary_key=True, max_length=100)
    webhook_id: str = Field(primary_key=True, max_length=200)
    body_sha256: str = Field(max_length=64)
    accepted_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class RecordVersion(SQLModel, table=True):
    """The newest version published per (source, record key); never moves backwards.

    `content_hash` is what was last published for the record: for senders without delivery ids a post is a
    duplicate only when it equals this, so a correction back to an earlier value is still published.
    `canonical_version` is the version ingest numbered: the AE version, or for other records without a
    sender's id how many distinct contents were published (it makes each publication's envelope id unique).
    """

    __tablename__ = "ingest_record_versions"

    source_id: str = Field(primary_key=True, max_length=100)
    record_key: str = Field(primary_key=True, max_length=500)
    source_version: str | None = Field(default=None, max_length=100)
    canonical_version: int | None = None
    record_type: str = Field(max_length=20)
    record_id: str = Field(max_length=200)
    trial: str = Field(max_length=200)
    subject: str = Field(max_length=200)  # no index (ingest_0004): it cost a fifth of a 100-event post
    site: str = Field(max_length=200)
    retracted: bool = False
    content_hash: str | None = Field(default=None, max_length=64)
    first_received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


UNMAPPABLE = "unmappable"


class RedcapTrigger(SQLModel, table=True):
    """A Data Entry Trigger, stored before we answer: REDCap never retries, so this row is the only copy.

    `state` is pending, done, or unmappable: pulled and published as far as it maps, but some form could not
    be mapped (`last_error` says which and why; the site must correct the record in REDCap). Reconciliation
    pulls record their unmappable forms here too, so one query lists everything a person must look at.
    """

    __tablename__ = "ingest_redcap_triggers"

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(max_length=100, index=True)
    record: str = Field(max_length=100)
    instrument: str = Field(max_length=100)
    event: str | None = Field(default=None, max_length=100)
    state: str = Field(default="pending", max_length=20, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=2000)
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    processed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class RedcapCursor(SQLModel, table=True):
    """Where the reconciliation pull resumes (`dateRangeBegin`): imports fire no trigger."""

    __tablename__ = "ingest_redcap_cursors"

    source_id: str = Field(primary_key=True, max_length=100)
    reconciled_from: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_run_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


TABLES = [AcceptedDelivery, WebhookDelivery, RecordVersion, RedcapTrigger, RedcapCursor]
