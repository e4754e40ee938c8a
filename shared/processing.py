"""The transactional step of every consumer: a polled batch in few commits (inbox claims, the service's rule,
outbox rows), a poison record set aside without losing the rest of its batch."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from shared.clock import Clock
from shared.inbox import Claim, add_claim, already_processed
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


class _RecordFailed(Exception):
    """Raised inside the batch transaction to roll it back: record `index` failed for good."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class TransactionalHandler(Generic[E]):
    """Applies a batch of messages in order, in as few transactions as it takes: the cost of a commit (a disk
    sync on SQLite, a round trip on PostgreSQL) is paid per transaction rather than per event.

    A transaction stops taking records after `transaction_seconds`, so a signal waits at most that long for
    its commit (and the relay's wake-up) however large the batch. A record that fails for good (poison, a bug
    in the rule) rolls its transaction back; the records before it are applied again and committed without
    it, then it is applied alone, fails again, and is returned as rejected. Transient errors (database,
    broker) propagate: the loop re-delivers everything from its last offset commit, which the inbox makes
    harmless.
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
        transaction_seconds: float = 0.2,
        record_scope: Callable[[ConsumedMessage], AbstractContextManager[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._consumer = consumer
        self._parse = parse
        self._event_id = event_id
        self._apply = apply
        self._clock = clock
        self._metrics = metrics
        self._on_committed = on_committed
        self._transaction_seconds = transaction_seconds
        self._record_scope = record_scope or (lambda _message: nullcontext())

    async def __call__(self, messages: Sequence[ConsumedMessage]) -> list[Rejected]:
        rejected: list[Rejected] = []
        parsed: list[tuple[ConsumedMessage, E]] = []
        for message in messages:
            try:
                parsed.append((message, self._parse(message.value)))
            except ValueError as exc:  # pydantic's ValidationError included
                rejected.append(Rejected(message, PoisonMessage(f"invalid envelope: {exc}")))
        while parsed:
            result, consumed = await asyncio.to_thread(self.process_batch, parsed)
            parsed = parsed[consumed:]
            rejected += result.rejected
            for outcome, count in result.outcomes.items():
                self._metrics.processed.labels(outcome=outcome).inc(count)
            if result.outcomes["processed"]:
                self._on_committed()
        return rejected

    def process_batch(self, items: Sequence[tuple[ConsumedMessage, E]]) -> tuple[BatchOutcome, int]:
        """Commit the longest run of `items` that fits in one transaction; (what it did, how many it consumed)."""
        try:
            outcomes, consumed = self._commit(items)
        except _RecordFailed as failed:
            if failed.index == 0:
                return BatchOutcome(rejected=[Rejected(items[0][0], failed.error)]), 1
            return self.process_batch(items[: failed.index])  # what came before it; it comes next, alone
        return BatchOutcome(outcomes=outcomes), consumed

    def _commit(self, items: Sequence[tuple[ConsumedMessage, E]]) -> tuple[Counter[str], int]:
        outcomes: Counter[str] = Counter()
        started = time.monotonic()
        with Session(self._engine) as session, session.begin():
            now = self._clock.now()
            ids = [self._event_id(envelope) for _, envelope in items]
            seen = already_processed(session, consumer=self._consumer, event_ids=ids)
            for index, ((message, envelope), event_id) in enumerate(zip(items, ids, strict=True)):
                if index and time.monotonic() - started > self._transaction_seconds:
                    return outcomes, index  # committed on the way out; the rest goes in the next transaction
                if event_id in seen:
                    outcomes["duplicate"] += 1
                    continue
                seen.add(event_id)
                claim = Claim(event_id, message.topic, message.partition, message.offset)
                add_claim(session, consumer=self._consumer, claim=claim, now=now)
                with self._record_scope(message):
                    self._apply_one(session, index, envelope, now)
                outcomes["processed"] += 1
        return outcomes, len(items)

    def _apply_one(self, session: Session, index: int, envelope: E, now: datetime) -> None:
        try:
            for outgoing in self._apply(session, envelope, now):
                add_to_outbox(session, producer=self._consumer, message=outgoing, now=now)
            session.flush()  # a failure of this record's writes shows here, not at the transaction's commit
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            raise _RecordFailed(index, exc) from exc
