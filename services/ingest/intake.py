"""The one path every format takes after its adapter: authenticate, bound, dedupe, order versions, publish, record.

Order matters: the size bound comes before reading, the signature before the rate limit and before parsing, the
broker's acknowledgement before the 2xx, and the record of what was accepted after the acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import Request
from pydantic import BaseModel
from sqlmodel import Session

from services.ingest import store
from services.ingest.adapters.records import SourceRecord
from services.ingest.authentication import authenticate
from services.ingest.models import RecordVersion
from services.ingest.normalise import to_envelope
from services.ingest.runtime import IngestRuntime
from services.ingest.sources import ENDPOINT_FOR_KIND, Source, SourceKind
from shared.events import (
    AeData,
    ClinicalEnvelopeBase,
    DoseData,
    LabData,
    RecordStatusData,
    SampleData,
    TransfusionData,
    message_key,
)
from shared.kafka import BrokerUnavailable
from shared.problems import ProblemError
from shared.webhook_signatures import SignatureError

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


class PublishInterrupted(BrokerUnavailable):
    """The broker failed part-way; `accepted` events before the failure are durable and recorded."""

    def __init__(self, message: str, *, accepted: int) -> None:
        super().__init__(message)
        self.accepted = accepted


class IngestResult(BaseModel):
    """What happened to each posted record, by the sender's delivery id."""

    accepted: list[str] = []
    duplicates: list[str] = []
    stale: list[str] = []
    ignored: list[str] = []


@dataclass
class Verdict:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


async def receive(request: Request, source_id: str, kind: SourceKind) -> tuple[IngestRuntime, Source, bytes, datetime]:
    """Find the source, read the raw bytes within its size bound, check the signature on them, then its rate limit.

    The source's rate limit is charged only once the request is authenticated, so whoever knows the URL cannot
    use it up and have the real sender refused; failed authentications have their own per-source bucket.
    """
    runtime: IngestRuntime = request.app.state.runtime
    source = runtime.sources.get(source_id)
    if source is None:
        raise ProblemError(404, "Unknown source", f"no source '{source_id}' is configured", slug="unknown-source")
    if source.config.kind != kind:
        right = ENDPOINT_FOR_KIND[source.config.kind]
        raise ProblemError(
            404,
            "Wrong endpoint for this source",
            f"source '{source_id}' is a {source.config.kind} source: post to /v1/sources/{source_id}/{right}",
            slug="wrong-endpoint",
        )
    body = await read_bounded(request, source.config.max_body_bytes or runtime.settings.max_body_bytes)
    received_at = runtime.clock.now()
    try:
        authenticate(
            source.credential,
            headers=request.headers,
            query=request.query_params,
            body=body,
            now=received_at,
            tolerance=runtime.signature_tolerance,
        )
    except SignatureError as exc:
        wait = runtime.rate_limiter.failure_retry_after(source_id)
        if wait is not None:
            runtime.metrics.rejected.labels(reason="auth_rate_limited").inc()
            raise _too_many(f"too many failed authentications for source '{source_id}'", wait) from exc
        runtime.metrics.rejected.labels(reason="signature").inc()
        raise ProblemError(401, "Invalid signature", str(exc), slug="invalid-signature") from exc
    wait = runtime.rate_limiter.retry_after(source_id)
    if wait is not None:
        runtime.metrics.rejected.labels(reason="rate_limited").inc()
        raise _too_many(f"source '{source_id}' is over its rate limit", wait)
    return runtime, source, body, received_at


def _too_many(what: str, wait: int) -> ProblemError:
    return ProblemError(
        429,
        "Too many requests",
        f"{what}; retry after {wait} s",
        slug="rate-limited",
        headers={"Retry-After": str(wait)},
    )


async def read_bounded(request: Request, limit: int) -> bytes:
    declared = (request.headers.get("content-length") or "").strip()
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise ProblemError(413, "Payload too large", f"the body is larger than {limit} bytes", slug="too-large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, "Payload too large", f"the body is larger than {limit} bytes", slug="too-large")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class _Planned:
    record: SourceRecord
    envelope: ClinicalEnvelopeBase
    update: store.VersionUpdate


async def accept_records(
    runtime: IngestRuntime,
    source_id: str,
    records: Sequence[SourceRecord],
    received_at: datetime,
    *,
    progress: Progress | None = None,
) -> Verdict:
    """Publish what is new and current; answer duplicates and stale versions without publishing them.

    Raises BrokerUnavailable if the broker fails; what it acknowledged before is recorded, so a retry
    reports those as duplicates and publishes only the rest.
    """
    verdict = Verdict()
    ids = [r.delivery_id for r in records if not r.content_identified]
    known, versions = await asyncio.to_thread(_lookup, runtime, source_id, ids, [r.record_key for r in records])
    planned: list[_Planned] = []
    seen: set[str] = set()
    for record in records:
        delivery = record.delivery_id
        current = versions.get(record.record_key)
        if _is_duplicate(record, current, known, seen):
            verdict.duplicates.append(delivery)
            continue
        seen.add(delivery)
        if _is_stale(record, current):
            verdict.stale.append(delivery)
            continue
        item = _plan(source_id, record, current, received_at)
        versions[record.record_key] = _advanced(current, item.update)
        planned.append(item)
    await _publish_in_batches(runtime, source_id, planned, received_at, verdict, progress)
    runtime.metrics.duplicates.inc(len(verdict.duplicates))
    runtime.metrics.stale.inc(len(verdict.stale))
    return verdict


def _lookup(
    runtime: IngestRuntime, source_id: str, ids: list[str], keys: list[str]
) -> tuple[set[str], dict[str, RecordVersion]]:
    with Session(runtime.engine) as session:
        return (
            store.already_accepted(session, source_id=source_id, event_ids=ids),
            store.record_versions(session, source_id=source_id, record_keys=keys),
        )


def _is_duplicate(record: SourceRecord, current: RecordVersion | None, known: set[str], seen: set[str]) -> bool:
    """A sender's delivery id seen before; or, without one, the very content last published for the record."""
    if record.content_identified:
        return current is not None and current.content_hash == record.content_hash
    return record.delivery_id in known or record.delivery_id in seen


def _is_stale(record: SourceRecord, current: RecordVersion | None) -> bool:
    """An older (or the same) source version than the newest published one never overwrites it."""
    if record.source_version is None or current is None or current.source_version is None:
        return False
    return record.source_version <= current.source_version


def _plan(source_id: str, record: SourceRecord, current: RecordVersion | None, received_at: datetime) -> _Planned:
    event = record.event
    data = event.data
    header = event.header
    numbered = (current.canonical_version or 0) if current is not None else 0
    canonical_version: int | None = None
    first_received = current.first_received_at if current is not None else received_at
    if isinstance(data, AeData):
        version = numbered + 1 if record.assign_version else data.version
        canonical_version = version
        data = data.model_copy(update={"version": version, "first_received_at": first_received})
    elif record.content_identified:
        canonical_version = numbered + 1
    if record.content_identified:
        # the same content may be published again after a change (3 -> 2 -> 3): its number keeps the id new
        header = header.model_copy(update={"id": f"{header.id}#{canonical_version}"})
    planned_event = type(event)(header=header, data=data)
    envelope = to_envelope(source_id, planned_event, received_at)
    record_type: str = str(header.type)
    if isinstance(data, RecordStatusData):
        record_type = data.record_type
    update = store.VersionUpdate(
        record_key=record.record_key,
        source_version=record.source_version,
        canonical_version=canonical_version,
        record_type=record_type,
        record_id=_record_id(data, header.subject)[:200],
        trial=header.study,
        subject=header.subject,
        site=header.site,
        retracted=isinstance(data, RecordStatusData) and data.status != "restored",
        first_received_at=first_received,
        content_hash=record.content_hash,
    )
    return _Planned(record=record, envelope=envelope, update=update)


def _record_id(data: BaseModel, subject: str) -> str:
    """The id safety knows the record by, so a later retraction names the same record."""
    if isinstance(data, AeData):
        return data.ae_id
    if isinstance(data, LabData):
        return data.result_id
    if isinstance(data, DoseData):
        return data.dose_id
    if isinstance(data, RecordStatusData):
        return data.record_id
    if isinstance(data, TransfusionData):
        return data.transfusion_id
    if isinstance(data, SampleData):
        return data.sample_id
    return subject


def _advanced(current: RecordVersion | None, update: store.VersionUpdate) -> RecordVersion:
    """The in-request view of a record after this update, so two versions in one body are ordered too."""
    row = RecordVersion(
        source_id="",
        record_key=update.record_key,
        source_version=current.source_version if current is not None else None,
        canonical_version=current.canonical_version if current is not None else None,
        record_type=update.record_type,
        record_id=update.record_id,
        trial=update.trial,
        subject=update.subject,
        site=update.site,
        retracted=update.retracted,
        content_hash=update.content_hash,
        first_received_at=update.first_received_at,
        updated_at=update.first_received_at,
    )
    if update.source_version is not None and (row.source_version is None or update.source_version > row.source_version):
        row.source_version = update.source_version
    if update.canonical_version is not None:
        row.canonical_version = max(row.canonical_version or 0, update.canonical_version)
    return row


async def _publish_in_batches(
    runtime: IngestRuntime,
    source_id: str,
    planned: list[_Planned],
    received_at: datetime,
    verdict: Verdict,
    progress: Progress | None,
) -> None:
    size = runtime.settings.publish_batch_size
    total = len(planned)
    for start in range(0, total, size):
        batch = planned[start : start + size]
        done, failure = await _publish_batch(runtime, batch)
        await asyncio.to_thread(_record, runtime, source_id, done, received_at)
        verdict.accepted.extend(item.envelope.senderid for item in done)
        for item in done:
            runtime.metrics.published.labels(type=str(getattr(item.envelope, "type", "unknown"))).inc()
            if flagged(item.record.event.data):
                runtime.metrics.flagged.labels(kind=str(item.record.event.header.type)).inc()
        if progress is not None:
            progress(len(verdict.accepted), total)
        if total > size:
            log.info("source %s: %d of %d events published", source_id, len(verdict.accepted), total)
        if failure is not None:
            raise PublishInterrupted(str(failure), accepted=len(verdict.accepted)) from failure


async def _publish_batch(runtime: IngestRuntime, batch: list[_Planned]) -> tuple[list[_Planned], BaseException | None]:
    """Concurrent sends, then wait for every acknowledgement; one subject's events stay in order (one chain)."""
    chains: dict[bytes, list[_Planned]] = {}
    for item in batch:
        chains.setdefault(message_key(item.envelope.trialid, item.envelope.subject), []).append(item)
    limit = asyncio.Semaphore(runtime.settings.publish_concurrency)
    done: list[_Planned] = []
    topic = runtime.settings.clinical_topic

    async def send(key: bytes, items: list[_Planned]) -> None:
        async with limit:
            for item in items:
                await runtime.publisher.publish(topic, key=key, value=item.envelope.model_dump_json().encode())
                done.append(item)

    results = await asyncio.gather(*(send(key, items) for key, items in chains.items()), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    unexpected = [f for f in failures if not isinstance(f, BrokerUnavailable)]
    if unexpected:
        raise unexpected[0]
    order = {id(item): index for index, item in enumerate(batch)}
    done.sort(key=lambda item: order[id(item)])
    return done, failures[0] if failures else None


def _record(runtime: IngestRuntime, source_id: str, done: list[_Planned], now: datetime) -> None:
    if not done:
        return
    with Session(runtime.engine) as session, session.begin():
        store.record_accepted(session, source_id=source_id, envelopes=[item.envelope for item in done], now=now)
        store.save_versions(session, source_id=source_id, updates=[item.update for item in done], now=now)


def broker_problem(runtime: IngestRuntime, exc: BrokerUnavailable) -> ProblemError:
    accepted = exc.accepted if isinstance(exc, PublishInterrupted) else 0
    runtime.metrics.rejected.labels(reason="broker_unavailable").inc()
    detail = f"{exc}; " + (
        f"{accepted} event(s) were acknowledged before the failure and will be reported as duplicates on retry"
        if accepted
        else "nothing was accepted, retry later"
    )
    return ProblemError(
        503,
        "Broker unavailable",
        detail,
        slug="broker-unavailable",
        headers={"Retry-After": str(runtime.settings.retry_after_seconds)},
    )


def flagged(data: BaseModel) -> bool:
    return isinstance(data, AeData | LabData) and bool(data.flags)
