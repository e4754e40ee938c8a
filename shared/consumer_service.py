"""The running parts of a consuming service: producer, consumer loop and outbox relay, started together.

Safety and notify differ only in what they consume and how they apply it; this is the part they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiokafka.errors import KafkaError
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from shared.clock import Clock
from shared.kafka import (
    ConsumedMessage,
    ConsumerLoop,
    ManagedProducer,
    ensure_topics,
    make_consumer,
    make_producer,
)
from shared.metrics import ConsumerMetrics, OutboxMetrics
from shared.outbox import OutboxRelay
from shared.processing import Apply, OpenBatch, TransactionalHandler
from shared.settings import ConsumerTuning
from shared.topics import dead_letter_topic
from shared.tracing import consuming

E = TypeVar("E")
log = logging.getLogger(__name__)

FAILPOINTS = ("none", "crash_before_offset_commit")
BackgroundJob = Callable[[asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec(Generic[E]):
    service: str
    group_id: str
    bootstrap_servers: str
    consume_topic: str
    produce_topics: Sequence[str]
    parse: Callable[[bytes], E]
    event_id: Callable[[E], str]
    apply: Apply[E] | OpenBatch[E]
    """A per-record rule, or with `batched` a factory of the rule of one transaction (see `BatchRule`)."""
    failpoint: str = "none"
    bulk_topic: str | None = None
    """Backfills and reconciliation pulls: consumed only while `consume_topic` has nothing waiting."""
    tuning: ConsumerTuning = field(default_factory=ConsumerTuning)
    batched: bool = False

    @property
    def consume_topics(self) -> list[str]:
        return [self.consume_topic] + ([self.bulk_topic] if self.bulk_topic else [])


class ConsumerService(Generic[E]):
    def __init__(
        self,
        spec: ConsumerSpec[E],
        *,
        engine: Engine,
        clock: Clock,
        registry: CollectorRegistry,
        on_committed: Callable[[], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """`tracer`: the service's, when it records spans (an exporter is configured); without one, records and
        signals carry their trace context on without spans (`shared.tracing.consuming`)."""
        if spec.failpoint not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {spec.failpoint!r}; known: {FAILPOINTS}")
        self.spec = spec
        self.failure: BaseException | None = None
        self._after_commit = on_committed
        self.producer = ManagedProducer(
            lambda: make_producer(spec.bootstrap_servers, client_id=f"sentinel-{spec.service}"), tracer=tracer
        )
        self.consumer_metrics = ConsumerMetrics.create(registry, spec.service)
        self.relay = OutboxRelay(
            engine=engine,
            publisher=self.producer,
            producer=spec.service,
            clock=clock,
            metrics=OutboxMetrics.create(registry, spec.service),
        )
        handler = TransactionalHandler(
            engine=engine,
            consumer=spec.service,
            parse=spec.parse,
            event_id=spec.event_id,
            apply=spec.apply,
            batched=spec.batched,
            clock=clock,
            metrics=self.consumer_metrics,
            on_committed=self._committed,
            transaction_seconds=spec.tuning.transaction_seconds,
            record_scope=consuming(tracer, consumer=spec.service),
        )
        self.loop = ConsumerLoop(
            name=spec.service,
            consumer_factory=lambda: make_consumer(
                spec.bootstrap_servers,
                group_id=spec.group_id,
                topics=spec.consume_topics,
                client_id=f"sentinel-{spec.service}",
            ),
            handler=handler,
            dead_letters=self.producer,
            metrics=self.consumer_metrics,
            priority_topics=[spec.consume_topic] if spec.bulk_topic else [],
            max_batch=spec.tuning.max_batch,
            bulk_batch=spec.tuning.bulk_batch,
            before_offset_commit=_crash if spec.failpoint == "crash_before_offset_commit" else None,
        )

    def _committed(self) -> None:
        self.relay.wake()
        if self._after_commit is not None:
            self._after_commit()

    def readiness(self) -> Mapping[str, bool]:
        return {
            "broker": self.producer.connected.is_set(),
            "consumer": self.loop.ready.is_set() and self.failure is None,
        }

    @asynccontextmanager
    async def running(self, *extra: BackgroundJob) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(stop, extra))
        try:
            yield
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, timeout=15)
            except TimeoutError:
                task.cancel()
            await self.producer.close()

    async def _run(self, stop: asyncio.Event, extra: Sequence[BackgroundJob]) -> None:
        await self.producer.connect(stop)
        if stop.is_set():
            return
        topics = [*self.spec.consume_topics, *self.spec.produce_topics]
        await self._ensure_topics([*topics, *(dead_letter_topic(t) for t in topics)], stop)
        if stop.is_set():
            return
        coroutines = [self.loop.run(stop), self.relay.run(stop), *(job(stop) for job in extra)]
        try:
            await asyncio.gather(*coroutines)
        except Exception as exc:
            # A bug, not a transient failure (those are retried inside): stop and say so on /readyz.
            self.failure = exc
            log.critical("%s: background processing stopped: %r", self.spec.service, exc)
            stop.set()
            raise

    async def _ensure_topics(self, topics: list[str], stop: asyncio.Event) -> None:
        """The broker may answer the producer yet refuse admin calls for a moment: retry, do not die."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await ensure_topics(self.spec.bootstrap_servers, topics)
                return
            except KafkaError as exc:
                log.warning("%s: cannot create topics yet (%s); retrying in %.1fs", self.spec.service, exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 10.0)

    def alive(self) -> bool:
        """False once background processing died of a bug: /healthz fails so the orchestrator restarts us."""
        return self.failure is None


def _crash(messages: Sequence[ConsumedMessage]) -> None:
    """Failpoint for the crash-recovery test: die like a power cut after the DB commit, before the offset."""
    last = messages[-1]
    log.critical(
        "failpoint: SIGKILL after processing %d message(s) up to %s[%d]@%d",
        len(messages),
        last.topic,
        last.partition,
        last.offset,
    )
    os.kill(os.getpid(), signal.SIGKILL)
