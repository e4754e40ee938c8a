"""Kafka client factories with safe settings, the publisher port, and the one consumer loop.

Safe settings, because the library defaults are not: the producer waits for all in-sync replicas and is
idempotent; consumers never auto-commit and start from the earliest offset when they have none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from shared.logs import id_chunks
from shared.memory import release
from shared.metrics import ConsumerMetrics
from shared.topics import dead_letter_topic
from shared.tracing import messaging_attributes, publishing, resumed, span, with_trace_headers

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)
event_log = structlog.stdlib.get_logger("sentinel.events")
CLOUDEVENTS_CONTENT_TYPE = b"application/cloudevents+json"
"""Structured mode of the CloudEvents Kafka binding: the whole event, attributes and data, is the value."""


class BrokerUnavailable(Exception):
    """The broker cannot take the message now; callers answer 503 or retry, never drop it."""


RELEASE_AFTER_RECORDS = 5000
"""A consumer that worked through at least this many records gives their memory back when its topics go quiet."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    BrokerUnavailable,
    OperationalError,
    IntegrityError,  # a concurrent replica claimed the same inbox row: retrying finds it processed
    DBAPIError,
    OSError,
    TimeoutError,
)


class Publisher(Protocol):
    """Publishes one message and returns only once the broker has it durably."""

    async def publish(
        self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None: ...


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: bytes
    value: bytes
    trace_context: str | None = None  # the W3C traceparent the record was written in, if any


@dataclass(frozen=True)
class EventRecord:
    """One record of a request's batch, with its envelope's identifying log fields (`shared.logs.EVENT_FIELDS`
    names), so the producer's span and log line need not parse the bytes back."""

    topic: str
    key: bytes
    value: bytes
    fields: Mapping[str, str] = field(default_factory=dict)


class BatchPublisher(Publisher, Protocol):
    """Also publishes many messages in order, returning once the broker has every one of them."""

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None: ...


def make_producer(bootstrap_servers: str, *, client_id: str, request_timeout_ms: int = 10_000) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=request_timeout_ms,
        max_request_size=2 * 1024 * 1024,
    )


def make_consumer(bootstrap_servers: str, *, group_id: str, topics: Sequence[str], client_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=500,
        fetch_max_wait_ms=100,  # an idle priority partition is re-fetched quickly while a bulk one is busy
    )


async def ensure_topics(bootstrap_servers: str, topics: Sequence[str], *, partitions: int = 3) -> None:
    """Create topics (and their dead-letter topics) if missing, so a fresh broker needs no manual step."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="sentinel-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t not in existing]
        if not wanted:
            return
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in wanted]
            )
    finally:
        await admin.close()


async def delete_topics(bootstrap_servers: str, prefixes: Sequence[str]) -> list[str]:
    """Delete the topics named with one of `prefixes` (a test or bench run's own, with their lanes and dead-letter
    topics): a shared development broker otherwise collects thousands, and every full metadata fetch (as
    `ensure_topics` makes at each start) then decodes them all. Returns the names deleted."""
    if not prefixes:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="sentinel-admin")
    await admin.start()
    try:
        doomed = sorted(t for t in await admin.list_topics() if t.startswith(tuple(prefixes)))
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


class PoisonMessage(Exception):
    """This message can never be processed as it is: it goes to the dead-letter topic, with this reason."""


@dataclass(frozen=True)
class ConsumedMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A message the handler could not process for good, and why: it goes to the dead-letter topic."""

    message: ConsumedMessage
    error: Exception


Polled = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
BatchHandler = Callable[[Sequence[ConsumedMessage]], Awaitable[Sequence[Rejected]]]
"""Processes a polled batch in order (the handler owns its DB transaction) and returns what it rejected."""


BULK_TURN_AFTER = 10
"""Priority batches in a row after which the bulk topic gets one batch (see `ConsumerLoop`)."""


class ConsumerLoop:
    """Poll a batch, handle it (one DB transaction), dead-letter what the handler rejected, commit the offsets.

    - Rejected messages (poison, or a non-transient error of the rule): the original bytes go to
      `<topic>.dlq` with the error before the offsets are committed; nothing is dropped silently, and the
      rest of the batch is kept.
    - Transient errors (broker, database, network): the consumer is restarted with backoff and resumes from
      the last committed offset; the handler's inbox makes the re-delivery a no-op.
    - Partitions of `priority_topics` are drained first: a bulk topic is polled only when they have nothing
      buffered, and `bulk_batch` records at a time, so an urgent event waits at most for one small batch. After
      `BULK_TURN_AFTER` priority batches in a row the bulk topic gets one batch: while urgent records keep coming
      (a replay, a backfill of serious AEs), a bulk record (a lab toxicity's page) still waits a bounded time.
    """

    def __init__(
        self,
        *,
        name: str,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        handler: BatchHandler,
        dead_letters: Publisher,
        metrics: ConsumerMetrics,
        before_offset_commit: Callable[[Sequence[ConsumedMessage]], None] | None = None,
        priority_topics: Sequence[str] = (),
        max_batch: int = 500,
        bulk_batch: int = 200,
        max_backoff: float = 30.0,
    ) -> None:
        self._name = name
        self._consumer_factory = consumer_factory
        self._handler = handler
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._before_offset_commit = before_offset_commit
        self._priority_topics = frozenset(priority_topics)
        self._max_batch = max_batch
        self._bulk_batch = bulk_batch if priority_topics else max_batch
        self._max_backoff = max_backoff
        self._priority_streak = 0
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            consumer = self._consumer_factory()
            try:
                await consumer.start()
                self.ready.set()
                await self._consume(consumer, stop)
            except TRANSIENT_ERRORS as exc:
                self.ready.clear()
                self._metrics.restarts.inc()
                log.warning("%s: transient failure (%s); restarting in %.1fs", self._name, exc, backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            finally:
                await consumer.stop()
            backoff = 0.5

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        since_release = 0
        while not stop.is_set():
            batches = await self._poll(consumer)
            if not batches:
                if since_release >= RELEASE_AFTER_RECORDS:  # a backlog is drained: give its memory back
                    release()
                    since_release = 0
                continue
            messages = [_consumed(record) for records in batches.values() for record in records]
            since_release += len(messages)
            await self._handle(messages)
            if self._before_offset_commit is not None:
                self._before_offset_commit(messages)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
            for tp, records in batches.items():
                self._record_lag(consumer, tp, records[-1].offset)

    async def _poll(self, consumer: AIOKafkaConsumer) -> Polled:
        """What the priority partitions have buffered; only when they have nothing, whatever arrives first.

        That second poll takes a smaller batch: an urgent event arriving meanwhile waits for it to finish.
        """
        assigned = consumer.assignment()
        urgent = [tp for tp in assigned if tp.topic in self._priority_topics]
        if urgent and self._priority_streak >= BULK_TURN_AFTER:
            self._priority_streak = 0
            bulk = [tp for tp in assigned if tp.topic not in self._priority_topics]
            turn: Polled = await consumer.getmany(*bulk, timeout_ms=0, max_records=self._bulk_batch) if bulk else {}
            if turn:
                return turn
        if urgent:
            batches: Polled = await consumer.getmany(*urgent, timeout_ms=0, max_records=self._max_batch)
            if batches:
                self._priority_streak += 1
                return batches
        self._priority_streak = 0
        polled: Polled = await consumer.getmany(timeout_ms=500, max_records=self._bulk_batch)
        return polled

    async def _handle(self, messages: Sequence[ConsumedMessage]) -> None:
        started = time.perf_counter()
        rejected = await self._handler(messages)
        share = (time.perf_counter() - started) / len(messages)
        for _ in messages:
            self._metrics.processing_seconds.observe(share)
        for item in rejected:
            await self._dead_letter(item.message, item.error)

    async def _dead_letter(self, message: ConsumedMessage, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, PoisonMessage) else "".join(traceback.format_exception(exc))[-4000:]
        log.error(
            "%s: dead-lettering %s[%d]@%d: %s",
            self._name,
            message.topic,
            message.partition,
            message.offset,
            type(exc).__name__,
        )
        headers = [
            ("error", reason.encode()),
            ("error_type", type(exc).__name__.encode()),
            ("source_topic", message.topic.encode()),
            ("source_partition", str(message.partition).encode()),
            ("source_offset", str(message.offset).encode()),
            ("consumer", self._name.encode()),
        ]
        await self._dead_letters.publish(
            dead_letter_topic(message.topic), key=message.key or b"", value=message.value, headers=headers
        )
        self._metrics.dead_letters.inc()
        self._metrics.processed.labels(outcome="dead_lettered").inc()

    def _record_lag(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        highwater = consumer.highwater(tp)
        if highwater is not None:
            self._metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(max(highwater - offset - 1, 0))


def _consumed(record: ConsumerRecord[bytes, bytes]) -> ConsumedMessage:
    return ConsumedMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value if record.value is not None else b"",
        headers=tuple(record.headers or ()),
    )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class ManagedProducer:
    """An idempotent producer that keeps trying to connect in the background.

    A service must start (and answer health checks) while the broker is down, and say 'not ready'
    rather than crash-loop.
    """

    def __init__(
        self,
        factory: Callable[[], AIOKafkaProducer],
        *,
        publish_timeout: float = 15.0,
        tracer: Tracer | None = None,
    ) -> None:
        self._factory = factory
        self._producer: AIOKafkaProducer | None = None
        self._publish_timeout = publish_timeout
        self._tracer = tracer
        self._stop: asyncio.Event | None = None
        self._restarts: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    async def connect(self, stop: asyncio.Event) -> None:
        self._stop = stop
        backoff = 0.5
        while not stop.is_set() and self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                log.warning("broker not reachable (%s); retrying in %.1fs", exc, backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self._producer = producer
            self.connected.set()

    async def close(self) -> None:
        for task in self._restarts:
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
            self.connected.clear()

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        producer = self._live_producer()
        with publishing(self._tracer, topic, value) as fields:
            try:
                await asyncio.wait_for(
                    producer.send_and_wait(topic, value=value, key=key, headers=record_headers(headers)),
                    timeout=self._publish_timeout,
                )
            except (KafkaError, TimeoutError) as exc:
                if isinstance(exc, PRODUCER_STATE_LOST) or not sender_alive(producer):
                    self._replace(producer)
                raise BrokerUnavailable(f"the broker did not acknowledge the message: {type(exc).__name__}") from exc
            if fields:
                event_log.info("event published", topic=topic, **fields)

    def _live_producer(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None and not sender_alive(producer):
            self._replace(producer)
            producer = None
        if producer is None:
            raise BrokerUnavailable("not connected to the Kafka broker (yet, or again)")
        return producer

    def _replace(self, dead: AIOKafkaProducer) -> None:
        """An idempotent producer that lost its sequence (an out-of-order sequence number after a broker
        restart, a fenced epoch), or whose sender died of it, fails every later send: a webhook would answer
        503 and the outbox would stall until someone restarted the service (both seen in the fault suite).
        Drop it and connect a new one in the background."""
        if self._producer is not dead:
            return  # another publish already replaced it
        log.error("the Kafka producer stopped after a fatal error; connecting a new one")
        self._producer = None
        self.connected.clear()
        task = asyncio.create_task(self._reconnect(dead))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _reconnect(self, dead: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):  # it is dead already; stopping only frees its connections
            await dead.stop()
        await self.connect(self._stop or asyncio.Event())

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        """Queue every record in order (one key keeps its order on its partition), then await every ack.

        Each record carries the trace it was written in (the outbox keeps it), so the consumer's span continues
        that trace, not the relay's."""
        producer = self._live_producer()

        async def send_all() -> None:
            acks = []
            for r in records:
                # without a tracer the stored context itself goes on the record: no span, nor the parse of the
                # value for its attributes
                tracer = self._tracer
                span = publishing(tracer, r.topic, r.value) if tracer is not None else contextlib.nullcontext()
                with resumed(r.trace_context), span:
                    acks.append(await producer.send(r.topic, value=r.value, key=r.key, headers=record_headers(())))
            await asyncio.gather(*acks)

        try:
            await asyncio.wait_for(send_all(), timeout=self._publish_timeout)
        except (KafkaError, TimeoutError) as exc:
            if isinstance(exc, PRODUCER_STATE_LOST) or not sender_alive(producer):
                self._replace(producer)
            raise BrokerUnavailable(f"the broker did not acknowledge every message: {type(exc).__name__}") from exc

    async def publish_each(self, records: Sequence[EventRecord]) -> list[BrokerUnavailable | None]:
        """Queue every record, then await every ack: per record, None once the broker has it durably, or why not.

        One call costs one producer span per topic and one log line, not one task, timer, span and line per record
        (those cost several times the send itself, profiled on 100-event posts). Records of one key keep their
        order on its partition; a record after a failed one of the same key is reported failed too, whatever the
        broker did with it, so what the caller records as accepted is a prefix of each key's records, and a resend
        publishes the rest in order again (the consumers' inboxes drop any copy the broker already had).
        """
        producer = self._live_producer()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        acks: list[asyncio.Future[object] | None] = [None] * len(records)
        failure: BaseException | None = None
        by_topic: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            by_topic.setdefault(record.topic, []).append(index)
        try:
            async with asyncio.timeout_at(deadline):
                for topic, indexes in by_topic.items():
                    with span(
                        self._tracer,
                        f"{topic} publish",
                        kind=SpanKind.PRODUCER,
                        attributes=_batch_attributes(topic, [records[i] for i in indexes]),
                    ):
                        headers = record_headers(())
                        for i in indexes:
                            r = records[i]
                            acks[i] = await producer.send(topic, value=r.value, key=r.key, headers=headers)
        except (KafkaError, TimeoutError) as exc:  # queued records may still be acknowledged: await them below
            failure = exc
        queued = [ack for ack in acks if ack is not None]
        if queued:
            await asyncio.wait(queued, timeout=max(deadline - loop.time(), 0.001))
        results: list[BrokerUnavailable | None] = []
        failed_keys: set[bytes] = set()
        for record, ack in zip(records, acks, strict=True):
            error: BaseException | None
            if ack is None:
                error = failure or TimeoutError()
            elif not ack.done():
                error = TimeoutError()
                ack.add_done_callback(_retrieve)  # settled later by the producer: nobody waits for it any more
            elif ack.cancelled():
                error = asyncio.CancelledError()  # the producer was closed under it
            else:
                error = ack.exception()
            if error is None and record.key in failed_keys:
                results.append(BrokerUnavailable("an earlier record of the same key was not acknowledged"))
                continue
            if error is not None:
                failed_keys.add(record.key)
                failure = failure or error
                results.append(BrokerUnavailable(f"the broker did not acknowledge the message: {type(error).__name__}"))
                continue
            results.append(None)
        if failure is not None and (isinstance(failure, PRODUCER_STATE_LOST) or not sender_alive(producer)):
            self._replace(producer)
        published = [r for r, outcome in zip(records, results, strict=True) if outcome is None]
        if published:
            _log_published(published)
        return results


def _retrieve(ack: asyncio.Future[object]) -> None:
    """Mark a late acknowledgement's outcome as seen (its record was already reported failed)."""
    if not ack.cancelled():
        ack.exception()


def _batch_attributes(topic: str, records: Sequence[EventRecord]) -> dict[str, str]:
    if len(records) == 1:
        return messaging_attributes(topic, records[0].fields)
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": str(len(records)),
    }


def _log_published(records: Sequence[EventRecord]) -> None:
    """One line per batch: the event's own fields for one record, the event ids for several."""
    if len(records) == 1:
        event_log.info("event published", topic=records[0].topic, **records[0].fields)
        return
    topics = sorted({r.topic for r in records})
    for ids in id_chunks([r.fields.get("event_id", "") for r in records]):
        event_log.info(
            "events published", topic=topics[0] if len(topics) == 1 else topics, count=len(ids), event_ids=ids
        )


PRODUCER_STATE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)
"""The broker no longer accepts this idempotent producer's sequence (seen after a broker restart): every
later batch to the partition would fail the same way. Only a new producer (a new id) can publish again;
consumers' inboxes make any re-publication a no-op."""


def sender_alive(producer: AIOKafkaProducer) -> bool:
    """False once the producer's background sender has ended (it does so only on a fatal error)."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return task is None or not task.done()


def record_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """What every record carries: the CloudEvents content type (unless the caller set one) and the current
    trace context, so the consumer's span continues the producer's trace."""
    extra = [] if any(k == "content-type" for k, _ in headers) else [("content-type", CLOUDEVENTS_CONTENT_TYPE)]
    return with_trace_headers([*headers, *extra])
