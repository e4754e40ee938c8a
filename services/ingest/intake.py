"""The one path every format takes after its adapter: authenticate, bound, dedupe, order versions, publish, record.

Order matters: the size bound comes before reading, the signature before the rate limit and before parsing, the
broker's acknowledgement before the 2xx, and the record of what was accepted after the acknowledgement.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import Connection

from services.ingest import store
from services.ingest.adapters.records import SourceRecord
from services.ingest.authentication import authenticate
from services.ingest.normalise import to_envelope
from services.ingest.runtime import IngestRuntime
from services.ingest.sources import ENDPOINT_FOR_KIND, AuthScheme, Source, SourceKind
from shared.events import (
    AeData,
    AeReviewData,
    ClinicalEnvelopeBase,
    DoseData,
    LabData,
    RecordStatusData,
    SampleData,
    TransfusionData,
    VitalsData,
    message_key,
)
from shared.http import DATABASE_UNAVAILABLE, database_problem
from shared.kafka import BrokerUnavailable, EventRecord, Publisher
from shared.lanes import clinical_topic_for, is_backfill
from shared.problems import ProblemError
from shared.webhook_signatures import SignatureError

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
MAX_WEBHOOK_ID = 200
"""The width of `ingest_webhook_deliveries.webhook_id`; longer ids are kept as a prefix plus their hash."""


class PublishInterrupted(BrokerUnavailable):
    """The broker failed part-way; `accepted` events before the failure are durable and recorded."""

    def __init__(self, message: str, *, accepted: int) -> None:
        super().__init__(message)
        self.accepted = accepted


class RecordingFailed(Exception):
    """The broker has the events but the database could not record them; `accepted` before them are recorded.

    The sender retries on the 503: the events are published again under the same envelope ids, which the
    consumers' inboxes drop, so nothing is lost and nothing a person sees is duplicated.
    """

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
            # only a bearer token may come in the query: parsing it for every signed post cost 1% of one
            query=request.query_params if source.credential.scheme == AuthScheme.BEARER else {},
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
    update: store.VersionUpdate | None
    """None for a record ingest keeps no row for (`SourceRecord.versioned`)."""


@dataclass(frozen=True)
class WebhookDelivery:
    """A Standard Webhooks message id and the SHA-256 of the body posted under it."""

    id: str
    body_sha256: str


class WebhookIdReused(Exception):
    """The webhook-id was accepted before with another body: not a resend, so neither a duplicate nor new."""


def webhook_delivery(source: Source, headers: Mapping[str, str], body: bytes) -> WebhookDelivery | None:
    """The delivery's id for Standard Webhooks sources (the other schemes sign no id); long ids are hashed."""
    if source.credential.scheme != AuthScheme.STANDARD_WEBHOOKS:
        return None
    msg_id = headers.get("webhook-id")
    if not msg_id:
        return None
    if len(msg_id) > MAX_WEBHOOK_ID:
        msg_id = f"{msg_id[:100]}~{hashlib.sha256(msg_id.encode()).hexdigest()}"
    return WebhookDelivery(msg_id, hashlib.sha256(body).hexdigest())


async def accept_records(
    runtime: IngestRuntime,
    source_id: str,
    records: Sequence[SourceRecord],
    received_at: datetime,
    *,
    progress: Progress | None = None,
    webhook: WebhookDelivery | None = None,
    backfill: bool = False,
) -> Verdict:
    """Publish what is new and current; answer duplicates and stale versions without publishing them.

    A backfill (or any large request) goes to the bulk lane, but for what must page (see shared.lanes).

    Raises BrokerUnavailable if the broker fails; what it acknowledged before is recorded, so a retry
    reports those as duplicates and publishes only the rest. Raises WebhookIdReused before publishing anything
    when the webhook-id came before with another body.
    """
    numbered = [r.record_key for r in records if r.assign_version or r.content_identified]
    if numbered:  # records whose next version this request decides: one request at a time (`record_claims`)
        async with runtime.claims.holding(source_id, numbered):
            verdict = await _accept(runtime, source_id, records, received_at, progress, webhook, backfill)
    else:  # the sender's own versions and delivery ids: no claim (the single-event hot path)
        verdict = await _accept(runtime, source_id, records, received_at, progress, webhook, backfill)
    runtime.metrics.duplicates.inc(len(verdict.duplicates))
    runtime.metrics.stale.inc(len(verdict.stale))
    return verdict


async def _accept(
    runtime: IngestRuntime,
    source_id: str,
    records: Sequence[SourceRecord],
    received_at: datetime,
    progress: Progress | None,
    webhook: WebhookDelivery | None,
    backfill: bool,
) -> Verdict:
    verdict = Verdict()
    ids = [r.delivery_id for r in records if not r.content_identified]
    keys = [r.record_key for r in records if r.versioned]
    if len(records) >= OFF_LOOP_RECORDS:
        # seconds of work for a backfill: in a thread, so an SAE posted meanwhile is answered within milliseconds
        def look_up_and_plan() -> list[_Planned]:
            known = _lookup(runtime, source_id, ids, keys, webhook)
            return _planned(source_id, records, received_at, webhook, known, verdict)

        planned = await asyncio.to_thread(look_up_and_plan)
    else:
        if runtime.engine.dialect.name == "sqlite":
            # a local read under WAL never waits for the writer: cheaper on the loop than a hop to a thread (for
            # 100 records too: in a thread it gained nothing measurable and its malloc arena kept 20 MB more)
            known = runtime.reader.read_known(
                source_id=source_id,
                event_ids=ids,
                record_keys=keys,
                webhook_id=webhook.id if webhook is not None else None,
            )
        else:
            known = await asyncio.to_thread(_lookup, runtime, source_id, ids, keys, webhook)
        planned = _planned(source_id, records, received_at, webhook, known, verdict)
    bulk = is_backfill(events=len(records), backfill_route=backfill)
    await _publish_in_batches(runtime, source_id, planned, received_at, verdict, progress, webhook, bulk)
    return verdict


T = TypeVar("T")
LARGE_BODY_BYTES = 256 * 1024
"""A body this large is parsed in a thread (see `parsed`)."""


async def parsed(body: bytes, parse: Callable[[], T]) -> T:
    """`parse()`, in a thread when the body is large: a backfill's parse takes the event loop for seconds, and a
    single-event post (an SAE) would wait that long for its 202. A small one is parsed on the loop (cheaper)."""
    if len(body) < LARGE_BODY_BYTES:
        return parse()
    return await asyncio.to_thread(parse)


OFF_LOOP_RECORDS = 1000
"""A request of this many records is looked up and planned in a thread: a backfill's took the event loop for
seconds, and a single-event post (an SAE) waited that long for its 202."""


def _planned(
    source_id: str,
    records: Sequence[SourceRecord],
    received_at: datetime,
    webhook: WebhookDelivery | None,
    known: store.Known,
    verdict: Verdict,
) -> list[_Planned]:
    """What to publish, in order; duplicates and stale versions go to `verdict`, unpublished."""
    if webhook is not None and known.webhook_body_sha256 not in (None, webhook.body_sha256):
        raise WebhookIdReused(webhook.id)
    versions = known.versions
    planned: list[_Planned] = []
    seen: set[str] = set()
    for record in records:
        delivery = record.delivery_id
        current = versions.get(record.record_key)
        if _is_duplicate(record, current, known.deliveries, seen):
            verdict.duplicates.append(delivery)
            continue
        seen.add(delivery)
        if _is_stale(record, current):
            verdict.stale.append(delivery)
            continue
        item = _plan(source_id, record, current, received_at)
        if item.update is not None:
            versions[record.record_key] = _advanced(current, item.update)
        planned.append(item)
    return planned


def _lookup(
    runtime: IngestRuntime, source_id: str, ids: list[str], keys: list[str], webhook: WebhookDelivery | None
) -> store.Known:
    return store.read_known(
        runtime.engine,
        source_id=source_id,
        event_ids=ids,
        record_keys=keys,
        webhook_id=webhook.id if webhook is not None else None,
    )


def _is_duplicate(record: SourceRecord, current: store.KnownVersion | None, known: set[str], seen: set[str]) -> bool:
    """A sender's delivery id seen before; or, without one, the very content last published for the record."""
    if record.content_identified:
        return current is not None and current.content_hash == record.content_hash
    return record.delivery_id in known or record.delivery_id in seen


def _is_stale(record: SourceRecord, current: store.KnownVersion | None) -> bool:
    """An older (or the same) source version than the newest published one never overwrites it."""
    if record.source_version is None or current is None or current.source_version is None:
        return False
    return record.source_version <= current.source_version


def _plan(source_id: str, record: SourceRecord, current: store.KnownVersion | None, received_at: datetime) -> _Planned:
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
    planned_event = replace(event, header=header, data=data)
    envelope = to_envelope(source_id, planned_event, received_at)
    if not record.versioned:
        return _Planned(record=record, envelope=envelope, update=None)
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
        # only a sender without delivery ids is deduplicated by content; hashing every record cost 9% of a post
        content_hash=record.content_hash if record.content_identified else None,
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
    if isinstance(data, VitalsData):
        return data.vitals_id
    if isinstance(data, AeReviewData):
        return data.review_id
    return subject  # enrolment and subject status: one per subject


def _advanced(current: store.KnownVersion | None, update: store.VersionUpdate) -> store.KnownVersion:
    """The in-request view of a record after this update, so two versions in one body are ordered too."""
    source_version = current.source_version if current is not None else None
    canonical_version = current.canonical_version if current is not None else None
    if update.source_version is not None and (source_version is None or update.source_version > source_version):
        source_version = update.source_version
    if update.canonical_version is not None:
        canonical_version = max(canonical_version or 0, update.canonical_version)
    return store.KnownVersion(source_version, canonical_version, update.content_hash, update.first_received_at)


async def _publish_in_batches(
    runtime: IngestRuntime,
    source_id: str,
    planned: list[_Planned],
    received_at: datetime,
    verdict: Verdict,
    progress: Progress | None,
    webhook: WebhookDelivery | None,
    bulk: bool,
) -> None:
    size = runtime.settings.publish_batch_size
    total = len(planned)
    for start in range(0, total, size):
        batch = planned[start : start + size]
        done, failure = await _publish_batch(runtime, batch, bulk)
        if done:
            write = store.AcceptedWrite(
                source_id=source_id,
                envelopes=[item.envelope for item in done],
                updates=[item.update for item in done if item.update is not None],
                now=received_at,
                webhook_id=webhook.id if webhook is not None else None,
                webhook_body_sha256=webhook.body_sha256 if webhook is not None else None,
            )
            try:
                await runtime.commits.commit(write)
            except DATABASE_UNAVAILABLE as exc:
                raise RecordingFailed(str(exc), accepted=len(verdict.accepted)) from exc
        verdict.accepted.extend(item.envelope.senderid for item in done)
        _count_published(runtime, done)
        if progress is not None:
            progress(len(verdict.accepted), total)
        if total > size:
            log.info("source %s: %d of %d events published", source_id, len(verdict.accepted), total)
        if failure is not None:
            raise PublishInterrupted(str(failure), accepted=len(verdict.accepted)) from failure


def _count_published(runtime: IngestRuntime, done: list[_Planned]) -> None:
    """One increment per type, not per event (a label lookup per event showed in profiles)."""
    if len(done) == 1:  # a single post: no tallies to build
        item = done[0]
        runtime.metrics.published.labels(type=str(getattr(item.envelope, "type", "unknown"))).inc()
        if flagged(item.record.event.data):
            runtime.metrics.flagged.labels(kind=str(item.record.event.header.type)).inc()
        return
    published: dict[str, int] = {}
    flags: dict[str, int] = {}
    for item in done:  # one pass, no generators: this ran for every event of a 100-event post
        type_ = str(getattr(item.envelope, "type", "unknown"))
        published[type_] = published.get(type_, 0) + 1
        event = item.record.event
        if flagged(event.data):
            kind = str(event.header.type)
            flags[kind] = flags.get(kind, 0) + 1
    for type_, count in published.items():
        runtime.metrics.published.labels(type=type_).inc(count)
    for kind, count in flags.items():
        runtime.metrics.flagged.labels(kind=kind).inc(count)


async def _publish_batch(
    runtime: IngestRuntime, batch: list[_Planned], bulk: bool
) -> tuple[list[_Planned], BaseException | None]:
    """Publish the batch at once and wait for every acknowledgement; what is done is a prefix of each subject's
    events (one subject's events stay in order), in the batch's order."""
    clinical = runtime.settings.clinical_topic
    records = [
        EventRecord(
            topic=clinical_topic_for(item.envelope, clinical_topic=clinical, backfill=bulk),
            key=message_key(item.envelope.trialid, item.envelope.subject),
            value=item.envelope.model_dump_json().encode(),
            fields=_log_fields(item.envelope),
        )
        for item in batch
    ]
    publish_each = getattr(runtime.publisher, "publish_each", None)
    outcomes: list[BrokerUnavailable | None]
    try:
        if publish_each is not None:
            outcomes = await publish_each(records)
        else:
            outcomes = await _publish_in_chains(runtime.publisher, records, runtime.settings.publish_concurrency)
    except BrokerUnavailable as exc:  # not connected: nothing of this batch sent (earlier batches stay recorded)
        outcomes = [exc] * len(records)
    done = [item for item, outcome in zip(batch, outcomes, strict=True) if outcome is None]
    failure = next((outcome for outcome in outcomes if outcome is not None), None)
    return done, failure


async def _publish_in_chains(
    publisher: Publisher, records: Sequence[EventRecord], concurrency: int
) -> list[BrokerUnavailable | None]:
    """For a publisher that sends one record at a time: one chain per key, concurrent chains; a chain stops at
    its first failure and the rest of it is reported failed."""
    chains: dict[bytes, list[int]] = {}
    for index, record in enumerate(records):
        chains.setdefault(record.key, []).append(index)
    outcomes: list[BrokerUnavailable | None] = [None] * len(records)
    limit = asyncio.Semaphore(concurrency)

    async def send(indexes: list[int]) -> None:
        async with limit:
            for position, index in enumerate(indexes):
                record = records[index]
                try:
                    await publisher.publish(record.topic, key=record.key, value=record.value)
                except BrokerUnavailable as exc:
                    for later in indexes[position:]:
                        outcomes[later] = exc
                    return

    await asyncio.gather(*(send(indexes) for indexes in chains.values()))
    return outcomes


def _log_fields(envelope: ClinicalEnvelopeBase) -> dict[str, str]:
    """The envelope's identifying log fields (`shared.logs.EVENT_FIELDS`), read from the model, not its bytes."""
    return {
        "event_id": envelope.id,
        "event_type": str(getattr(envelope, "type", "")),
        "trial": envelope.trialid,
        "subject": envelope.subject,
        "source": envelope.source,
    }


def save_accepted(connection: Connection, writes: Sequence[store.AcceptedWrite]) -> None:
    """The commit queue's writer: every waiting request's records in one transaction."""
    store.save_accepted(connection, writes=writes)


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


def database_problem_for(runtime: IngestRuntime, exc: RecordingFailed) -> ProblemError:
    runtime.metrics.rejected.labels(reason="database_unavailable").inc()
    problem = database_problem(runtime.settings.retry_after_seconds)
    if exc.accepted:
        problem.detail += f"; {exc.accepted} event(s) were recorded before the failure and will be duplicates on retry"
    return problem


def webhook_conflict(runtime: IngestRuntime, exc: WebhookIdReused) -> ProblemError:
    runtime.metrics.rejected.labels(reason="webhook_id_reused").inc()
    return ProblemError(
        409,
        "Webhook id reused with another body",
        f"webhook-id '{exc}' was accepted before with a different body; a resend must carry the same body, "
        "a new message needs a new webhook-id (Standard Webhooks). Nothing of this request was published.",
        slug="webhook-id-reused",
        errors=[{"pointer": "", "detail": "header webhook-id: already used for another body"}],
    )


def flagged(data: BaseModel) -> bool:
    return isinstance(data, _FLAGGABLE) and bool(data.flags)


_FLAGGABLE = (AeData, LabData)
"""A tuple, not `AeData | LabData`: the union would be built anew on every call (once per published event)."""
