"""What every adapter returns: canonical events plus what the two levels of idempotency need."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from services.ingest.normalise import CanonicalEvent
from shared.events import InboundHeader, InboundType

MAX_RECORD_KEY = 500
"""The width of `ingest_record_versions.record_key`; longer keys are shortened with a hash, never refused
after the broker has acknowledged the event."""


@dataclass(frozen=True)
class SourceRecord:
    """One canonical event from a sender, with its place in that sender's history.

    `record_key` names the clinical record (one AE, one lab result) within the source; `source_version` is a
    sortable text (see `version_text`) or None when the sender keeps no version; `assign_version` asks ingest to
    number AE versions itself because the sender has none. `content_identified` means the sender gave no
    delivery id: the record is then a duplicate only when its content equals what was last published for the
    record, so a correction back to an earlier value (grade 3 -> 2 -> 3) is published again.
    """

    event: CanonicalEvent
    record_key: str
    source_version: str | None = None
    assign_version: bool = False
    content_identified: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "record_key", fitted_key(self.record_key))

    @property
    def delivery_id(self) -> str:
        return self.event.header.id

    @property
    def versioned(self) -> bool:
        """Whether ingest keeps a row for the record (`ingest_record_versions`): only what a later post is judged
        against needs one, a sender's version (stale replays), a version ingest numbers, or the content last
        published (senders without delivery ids; REDCap's, which a deleted REDCap record also lists by subject).
        A record posted with a delivery id and nothing else is deduplicated by that id alone and its row was never
        read: writing it was two thirds of a 100-event post's commit (measured)."""
        return self.source_version is not None or self.assign_version or self.content_identified

    @cached_property
    def content_hash(self) -> str:
        """What the sender said about the record (type and payload), independent of ingest's numbering."""
        return content_hash(str(self.event.header.type), self.event.data)


@dataclass
class Outcome:
    """What an adapter made of a body: records to publish, what it deliberately left out (and why), and the
    form instances it could not map when the caller asked it to go on (REDCap pulls: one bad record must not
    hold back the others)."""

    records: list[SourceRecord] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def fitted_key(key: str) -> str:
    """The key itself when it fits the column, else a stable prefix plus a hash of the whole key."""
    if len(key) <= MAX_RECORD_KEY:
        return key
    return f"{key[:400]}~{hashlib.sha256(key.encode()).hexdigest()}"


def version_text(value: int | str) -> str:
    """Integers sort as zero-padded text; ISO UTC timestamps already sort as text."""
    if isinstance(value, int):
        return f"n{value:020d}"
    return f"t{value}"


def content_hash(type_: str, data: BaseModel) -> str:
    canonical = json.dumps({"type": type_, "data": data.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_record(
    *,
    type_: InboundType,
    data: BaseModel,
    study: str,
    site: str,
    subject: str,
    record_key: str,
    delivery_id: str | None = None,
    source_version: str | None = None,
    assign_version: bool = False,
    entered_at: datetime | None = None,
) -> SourceRecord:
    """Without a sender's delivery id the record is identified by its content (see `SourceRecord`); `entered_at`: see
    `CanonicalEvent`."""
    key = fitted_key(record_key)
    header = InboundHeader(
        id=delivery_id or f"{key[:160]}@{content_hash(str(type_), data)[:24]}",
        type=type_,
        study=study,
        site=site,
        subject=subject,
        data={},
    )
    return SourceRecord(
        event=CanonicalEvent(header=header, data=data, entered_at=entered_at),
        record_key=key,
        source_version=source_version,
        assign_version=assign_version,
        content_identified=delivery_id is None,
    )
