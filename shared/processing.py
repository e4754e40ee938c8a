"""The transactional step of every consumer: a polled batch in one commit (inbox claims, the service's rule,
outbox rows), a poison record set aside without losing the rest of its batch."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from shared.clock import Clock
from shared.inbox import Claim, claim_events
from shared.kafka import TRANSIENT_ERRORS, ConsumedMessage, PoisonMessage, Rejected
from shared.metrics import ConsumerMetrics
from shared.outbox import Outgoing, add_to_outbox

E = TypeVar("E")
Apply = Callable[[Session, E, datetime], Sequence[Outgoing]]


@dataclass
class BatchOutcome:
    """What one batch did: counts by outcome (processed, duplicate) and the records set aside."""

    outcomes: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        self.outcomes += other.outcomes
        self.rejected += other.rejected


class _RecordFailed(Exception):
    """Raised inside the batch transaction to roll it back: record `index` failed for good."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class TransactionalHandler(Generic[E]):
    """Applies a batch of messages in order, in one transaction, so the cost of a commit (a disk sync on
    SQLite, a round trip on PostgreSQL) is paid once per batch rather than once per event.

    A record that fails for good (poison, a bug in the rule) rolls the transaction back; the records before
    it are applied again without it and committed, it is returned as rejected, and the batch goes on
    after it. Transient errors (database, broker) propagate: nothing of the batch is committed, and the
    loop re-delivers it.
    """

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

    async def __call__(self, messages: Sequence[ConsumedMessage]) -> list[Rejected]:
        parsed: list[tuple[ConsumedMessage, E]] = []
        result = BatchOutcome()
        for message in messages:
            try:
                parsed.append((message, self._parse(message.value)))
            except ValueError as exc:  # pydantic's ValidationError included
                result.rejected.append(Rejected(message, PoisonMessage(f"invalid envelope: {exc}")))
        if parsed:
            result.add(await asyncio.to_thread(self.process_batch, parsed))
        for outcome, count in result.outcomes.items():
            self._metrics.processed.labels(outcome=outcome).inc(count)
        if result.outcomes["processed"]:
            self._on_committed()
        return result.rejected

    def process_batch(self, items: Sequence[tuple[ConsumedMessage, E]]) -> BatchOutcome:
        result = BatchOutcome()
        while items:
            try:
                result.outcomes += self._commit(items)
                return result
            except _RecordFailed as failed:
                if failed.index:  # what came before it is good: commit it without the failed record
                    result.add(self.process_batch(items[: failed.index]))
                result.rejected.append(Rejected(items[failed.index][0], failed.error))
                items = items[failed.index + 1 :]
        return result

    def _commit(self, items: Sequence[tuple[ConsumedMessage, E]]) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        with Session(self._engine) as session, session.begin():
            now = self._clock.now()
            claims = [
                Claim(self._event_id(envelope), message.topic, message.partition, message.offset)
                for message, envelope in items
            ]
            fresh = claim_events(session, consumer=self._consumer, claims=claims, now=now)
            for index, ((_, envelope), is_new) in enumerate(zip(items, fresh, strict=True)):
                if not is_new:
                    outcomes["duplicate"] += 1
                    continue
                self._apply_one(session, index, envelope, now)
                outcomes["processed"] += 1
        return outcomes

    def _apply_one(self, session: Session, index: int, envelope: E, now: datetime) -> None:
        try:
            for outgoing in self._apply(session, envelope, now):
                add_to_outbox(session, producer=self._consumer, message=outgoing, now=now)
            session.flush()  # a failure of this record's writes shows here, not at the batch's commit
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            raise _RecordFailed(index, exc) from exc
