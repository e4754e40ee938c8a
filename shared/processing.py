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
from typing import Generic, Protocol, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from shared.clock import Clock
from shared.inbox import Claim, add_claims, already_processed
from shared.kafka import TRANSIENT_ERRORS, ConsumedMessage, PoisonMessage, Rejected
from shared.lanes import is_bulk
from shared.logs import id_chunks
from shared.metrics import ConsumerMetrics
from shared.outbox import OutboxRows, Outgoing
from shared.tracing import continuing, current_traceparent, envelope_attributes
from shared.tracing import log as event_log

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)
Apply = Callable[[Session, E, datetime], Sequence[Outgoing]]


class BatchRule(Protocol[E_contra]):
    """A consumer's rule for one transaction: each record applied in order, then work deferred to the end.

    `finish` is where per-record rules that would otherwise repeat for every record of one key (a subject's
    reassessment from its stored data) run once. It returns each message with the id of the record it
    belongs to, so it continues that record's trace. `live`: the record did not come on a bulk lane (a
    backfill's), for a rule whose urgency depends on it (`shared.lanes`).
    """

    def apply(self, envelope: E_contra, *, live: bool = False) -> Sequence[Outgoing]: ...

    def finish(self) -> Sequence[tuple[str, Outgoing]]: ...


OpenBatch = Callable[[Session, datetime, Sequence[E]], BatchRule[E]]
"""Makes the rule of one transaction; it sees the batch's records up front (to load what they need at once)."""


class PerRecord(Generic[E]):
    """A per-record rule with nothing deferred."""

    def __init__(self, apply: Apply[E], session: Session, now: datetime) -> None:
        self._apply, self._session, self._now = apply, session, now

    def apply(self, envelope: E, *, live: bool = False) -> Sequence[Outgoing]:
        return self._apply(self._session, envelope, self._now)

    def finish(self) -> Sequence[tuple[str, Outgoing]]:
        return ()


def per_record(apply: Apply[E]) -> OpenBatch[E]:
    return lambda session, now, _records: PerRecord(apply, session, now)


@dataclass
class BatchOutcome:
    """What one batch did: counts by outcome (processed, duplicate) and the records set aside."""

    outcomes: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)


class _FinishFailed(Exception):
    """Raised inside the batch transaction to roll it back: the deferred step failed for good, and which
    record caused it is unknown until the batch is split."""


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
    it, then it is applied alone, fails again, and is returned as rejected. A failure in the rule's deferred
    step (see `BatchRule`) names no record: the batch is halved until the record is alone. Transient errors (database,
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
        apply: Apply[E] | OpenBatch[E],
        clock: Clock,
        metrics: ConsumerMetrics,
        on_committed: Callable[[], None] = lambda: None,
        transaction_seconds: float = 0.2,
        record_scope: Callable[[ConsumedMessage, E], AbstractContextManager[None]] | None = None,
        batched: bool = False,
    ) -> None:
        """`apply` is a per-record rule, or with `batched` a factory of a `BatchRule` per transaction."""
        self._engine = engine
        self._consumer = consumer
        self._parse = parse
        self._event_id = event_id
        self._open: OpenBatch[E] = apply if batched else per_record(apply)  # type: ignore[assignment,arg-type]
        self._clock = clock
        self._metrics = metrics
        self._on_committed = on_committed
        self._transaction_seconds = transaction_seconds
        self._record_scope = record_scope or (lambda _message, _parsed: nullcontext())

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
        except _FinishFailed as failed:
            if len(items) == 1:
                error = failed.__cause__ if isinstance(failed.__cause__, Exception) else failed
                return BatchOutcome(rejected=[Rejected(items[0][0], error)]), 1
            return self.process_batch(items[: len(items) // 2])
        return BatchOutcome(outcomes=outcomes), consumed

    def _commit(self, items: Sequence[tuple[ConsumedMessage, E]]) -> tuple[Counter[str], int]:
        outcomes: Counter[str] = Counter()
        started = time.monotonic()
        consumed = len(items)
        # Not expired at the commit: the session closes right after it and nothing reads its rows again, and
        # expiring every row the batch touched was a few percent of a batch's CPU.
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            now = self._clock.now()
            ids = [self._event_id(envelope) for _, envelope in items]
            seen = already_processed(session, consumer=self._consumer, event_ids=ids)
            rule = self._open(
                session, now, [envelope for (_, envelope), i in zip(items, ids, strict=True) if i not in seen]
            )
            traces: dict[str, str | None] = {}
            live: dict[str, bool] = {}  # by event id: not from a bulk lane (`shared.lanes.signal_topic`)
            claims: list[Claim] = []
            queued = OutboxRows(self._consumer)
            for index, ((message, envelope), event_id) in enumerate(zip(items, ids, strict=True)):
                if index and time.monotonic() - started > self._transaction_seconds:
                    consumed = index  # committed on the way out; the rest goes in the next transaction
                    break
                if event_id in seen:
                    outcomes["duplicate"] += 1
                    continue
                seen.add(event_id)
                claims.append(Claim(event_id, message.topic, message.partition, message.offset))
                live[event_id] = not is_bulk(message.topic)
                with self._record_scope(message, envelope):
                    self._apply_one(queued, index, rule, envelope, now, live=live[event_id])
                    traces[event_id] = current_traceparent()
                outcomes["processed"] += 1
            add_claims(session, consumer=self._consumer, claims=claims, now=now)  # one statement for the batch
            self._finish(session, rule, traces, live, queued, now)
            queued.write(session)
        _log_handled(self._consumer, claims, items, traces, outcomes["duplicate"], time.monotonic() - started)
        return outcomes, consumed

    def _apply_one(
        self, queued: OutboxRows, index: int, rule: BatchRule[E], envelope: E, now: datetime, *, live: bool
    ) -> None:
        """Not flushed per record: the writes of a batch go to the database together (a failing write shows at
        a later record's query or at the end, and the batch is split until the record at fault is alone)."""
        try:
            for outgoing in rule.apply(envelope, live=live):
                queued.add(outgoing, now=now, live=live)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            raise _RecordFailed(index, exc) from exc

    def _finish(
        self,
        session: Session,
        rule: BatchRule[E],
        traces: dict[str, str | None],
        live: dict[str, bool],
        queued: OutboxRows,
        now: datetime,
    ) -> None:
        try:
            for event_id, outgoing in rule.finish():
                with continuing(traces.get(event_id)):
                    queued.add(outgoing, now=now, live=live.get(event_id, False))
            session.flush()
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            raise _FinishFailed(str(exc)) from exc


def _log_handled(
    consumer: str,
    claims: Sequence[Claim],
    items: Sequence[tuple[ConsumedMessage, object]],
    traces: dict[str, str | None],
    duplicates: int,
    seconds: float,
) -> None:
    """One line per committed transaction, written once it is committed: the event's fields for one event (in its
    trace), the event ids for several. A line per event was 16 us of each, and said "handled" before the commit."""
    ms = round(seconds * 1000, 1)
    if len(claims) == 1:
        [claim] = claims
        where = (claim.topic, claim.partition, claim.offset)
        value = next((m.value for m, _ in items if (m.topic, m.partition, m.offset) == where), b"")
        with continuing(traces.get(claim.event_id)):
            event_log.info(
                "event handled",
                consumer=consumer,
                topic=claim.topic,
                partition=claim.partition,
                offset=claim.offset,
                duplicates=duplicates,
                ms=ms,
                **envelope_attributes(value),
            )
    elif claims or duplicates:
        topics = sorted({claim.topic for claim in claims})
        for ids in id_chunks([claim.event_id for claim in claims]):
            event_log.info(
                "events handled",
                consumer=consumer,
                count=len(ids),
                duplicates=duplicates,
                topics=topics,
                event_ids=ids,
                ms=ms,
            )
