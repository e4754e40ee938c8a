"""Notify's watch on the dead-letter topics: every message a consumer gave up on becomes an alert that pages
its owner and escalates until acknowledged (a dead-lettered event may be a lost SAE; a metric alone is
not enough). Idempotent by the dead letter's identity, so re-delivery never pages twice.

Its own small consumer (group `<notify group>-dead-letters`), started beside the signal consumer: it
needs the records' headers and position, which the generic envelope consumer does not pass on. A record
it cannot turn into an alert (a bug) is never skipped: the watch counts the error, says "not ready" on
/readyz and retries it with backoff, while the signal consumer, the timers and the mails go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from sqlalchemy import Engine
from sqlmodel import Session

from services.notify import scheduling, store
from services.notify.dead_letters import DEAD_LETTER_KIND, UNKNOWN, DeadLetter, plan_dead_letter, read_dead_letter
from services.notify.metrics import DeadLetterMetrics
from shared.clock import Clock
from shared.kafka import TRANSIENT_ERRORS, ensure_topics, make_consumer
from shared.protocol import Protocol

log = logging.getLogger(__name__)
SYSTEM = "system"


def apply_dead_letter(session: Session, letter: DeadLetter, now: datetime, *, protocol: Protocol) -> bool:
    """Open the dead letter's alert, page its owners and start escalation; False if it was already open."""
    store.lock_audit(session)
    plan = plan_dead_letter(letter, protocol)
    if store.find_alert_by_thread(session, thread_key=plan.thread_key) is not None:
        return False
    alert = store.create_alert(
        session,
        plan=plan,
        kind=DEAD_LETTER_KIND,
        trial_id=protocol.trial_id,
        site_id=letter.site_id or UNKNOWN,
        subject_id=letter.subject_id or UNKNOWN,
        now=now,
    )
    ae = "; it could be an adverse event" if letter.could_be_ae else ""
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="opened",
        detail=f"{letter.consumer} dead-lettered {letter.event_type or 'an unreadable message'} "
        f"({letter.identity}): {letter.error_type}: {letter.error_summary}{ae}",
        now=now,
        identity=letter.identity,
    )
    store.queue_messages(session, alert_id=alert.id, messages=plan.messages, now=now)
    scheduling.start_escalation(session, alert=alert, protocol=protocol, now=now)
    return True


class DeadLetterWatch:
    def __init__(
        self,
        *,
        engine: Engine,
        protocol: Protocol,
        clock: Clock,
        metrics: DeadLetterMetrics,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        on_committed: Callable[[], None] | None = None,
        consumer_factory: Callable[[], AIOKafkaConsumer] | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self._engine = engine
        self._protocol = protocol
        self._clock = clock
        self._metrics = metrics
        self._bootstrap = bootstrap_servers
        self._topics = list(topics)
        self._on_committed = on_committed
        self._consumer_factory = consumer_factory or (
            lambda: make_consumer(
                bootstrap_servers, group_id=group_id, topics=self._topics, client_id="sentinel-notify-dead-letters"
            )
        )
        self._prepare = prepare or (lambda: ensure_topics(bootstrap_servers, self._topics))
        self._max_backoff = max_backoff
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = min(0.5, self._max_backoff)
        while not stop.is_set():
            consumer: AIOKafkaConsumer | None = None
            try:
                await self._prepare()
                consumer = self._consumer_factory()
                await consumer.start()
                self.ready.set()
                backoff = min(0.5, self._max_backoff)
                await self._consume(consumer, stop)
            except Exception as exc:
                # Transient (broker, database): restart. A bug: not swallowed (counted, logged, not ready) and
                # not skipped: the record was not committed, so it is retried after the backoff.
                self.ready.clear()
                if isinstance(exc, TRANSIENT_ERRORS):
                    self._metrics.restarts.inc()
                    log.warning("dead-letter watch: transient failure (%s); restarting in %.1fs", exc, backoff)
                else:
                    self._metrics.errors.inc()
                    log.exception("dead-letter watch cannot turn a dead letter into an alert; retry in %.1fs", backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                if consumer is not None:
                    await consumer.stop()
        self.ready.clear()

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in batches.items():
                for record in records:
                    letter = read_dead_letter(
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value or b"",
                        headers=tuple(record.headers or ()),
                    )
                    opened = await asyncio.to_thread(self.handle, letter)
                    await consumer.commit({tp: record.offset + 1})
                    if opened and self._on_committed is not None:
                        self._on_committed()

    def handle(self, letter: DeadLetter) -> bool:
        with Session(self._engine) as session, session.begin():
            opened = apply_dead_letter(session, letter, self._clock.now(), protocol=self._protocol)
        self._metrics.alerts.labels(outcome="opened" if opened else "duplicate").inc()
        if opened:
            log.error(
                "dead letter %s from %s (%s) paged its owners", letter.identity, letter.consumer, letter.error_type
            )
        return opened
