"""What every adapter returns: canonical events plus what the two levels of idempotency need."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from services.ingest.normalise import CanonicalEvent
from shared.events import InboundHeader, InboundType


@dataclass(frozen=True)
class SourceRecord:
    """One canonical event from a sender, with its place in that sender's history.

    `record_key` names the clinical record (one AE, one lab result) within the source; `source_version` is a
    sortable text (see `version_text`) or None when the sender keeps no version; `assign_version` asks ingest to
    number AE versions itself because the sender has none.
    """

    event: CanonicalEvent
    record_key: str
    source_version: str | None = None
    assign_version: bool = False

    @property
    def delivery_id(self) -> str:
        return self.event.header.id


@dataclass
class Outcome:
    """What an adapter made of a body: records to publish, and what it deliberately left out (and why)."""

    records: list[SourceRecord] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def version_text(value: int | str) -> str:
    """Integers sort as zero-padded text; ISO UTC timestamps already sort as text."""
    if isinstance(value, int):
        return f"n{value:020d}"
    return f"t{value}"


def content_id(prefix: str, data: BaseModel) -> str:
    """A delivery id from the content, for senders without message ids: the same snapshot is a duplicate."""
    digest = hashlib.sha256(json.dumps(data.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:24]
    return f"{prefix[:170]}@{digest}"


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
) -> SourceRecord:
    header_data: dict[str, Any] = {}
    header = InboundHeader(
        id=delivery_id or content_id(record_key, data),
        type=type_,
        study=study,
        site=site,
        subject=subject,
        data=header_data,
    )
    return SourceRecord(
        event=CanonicalEvent(header=header, data=data),
        record_key=record_key,
        source_version=source_version,
        assign_version=assign_version,
    )
