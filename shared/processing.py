"""The transactional step of every consumer: inbox claim, the service's rule, outbox rows, one commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from shared.clock import Clock
from shared.inbox import claim_event
from shared.kafka import ConsumedMessage, PoisonMessage
from shared.metrics import ConsumerMetrics
from shared.outbox import Outgoing, add_to_outbox

E = TypeVar("E")
Apply = Callable[[Session, E, datetime], Sequence[Outgoing]]


class TransactionalHandler(Generic[E]):
    def __init__(
        self,
        *,
        engine: Engine,
        consumer: str,
        parse: Callable[[bytes], E],
        event_id: Callable[[E], str],
        apply: Apply[E],
        clock: Clock,
        metrics: ConsumerMetrics,
        on_committed: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._consumer = consumer
        self._parse = parse
        self._event_id = event_id
        self._apply = apply
        self._clock = clock
        self._metrics = metrics
        self._on_committed = on_committed

    async def __call__(self, message: ConsumedMessage) -> None:
        try:
            envelope = self._parse(message.value)
        except ValueError as exc:  # pydantic's ValidationError included
            raise PoisonMessage(f"invalid envelope: {exc}") from exc
        outcome = await asyncio.to_thread(self.process, message, envelope)
        self._metrics.processed.labels(outcome=outcome).inc()
        if outcome == "processed":
            self._on_committed()

    def process(self, message: ConsumedMessage, envelope: E) -> str:
        with Session(self._engine) as session, session.begin():
            now = self._clock.now()
            claimed = claim_event(
                session,
                consumer=self._consumer,
                event_id=self._event_id(envelope),
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                now=now,
            )
            if not claimed:
                return "duplicate"
            for outgoing in self._apply(session, envelope, now):
                add_to_outbox(session, producer=self._consumer, message=outgoing, now=now)
        return "processed"
