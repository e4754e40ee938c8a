"""The consumer's transactional step: inbox claim + rule + outbox rows in one commit, idempotent by event id."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from shared.clock import FakeClock
from shared.db import create_tables
from shared.events import CLINICAL_ADAPTER, ClinicalEnvelope, message_key
from shared.inbox import ProcessedEvent, claim_event
from shared.kafka import BrokerUnavailable, ConsumedMessage, PoisonMessage
from shared.metrics import ConsumerMetrics, OutboxMetrics
from shared.outbox import OutboxMessage, OutboxRelay, Outgoing, add_to_outbox
from shared.processing import TransactionalHandler, per_record
from tests.polling import await_for

SIGNALS = "sentinel.signals.v1"


@pytest.fixture
def tables(engine: Engine) -> Engine:
    create_tables(engine, [ProcessedEvent, OutboxMessage])
    return engine


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


class Rule:
    """A stand-in service rule: every event yields one signal derived from it; calls are counted."""

    def __init__(self, make_sae: Any) -> None:
        self.calls = 0
        self._make_sae = make_sae

    def __call__(self, session: Session, envelope: ClinicalEnvelope, now: datetime) -> Sequence[Outgoing]:
        self.calls += 1
        signal = self._make_sae(signal_id=f"signal-of-{envelope.id}")
        return [Outgoing(topic=SIGNALS, key=message_key(envelope.trialid, envelope.subject), envelope=signal)]


def handler_for(engine: Engine, clock: FakeClock, rule: Rule, registry: CollectorRegistry, committed: list[int]) -> Any:
    return TransactionalHandler(
        engine=engine,
        consumer="safety",
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=rule,
        clock=clock,
        metrics=ConsumerMetrics.create(registry, "safety"),
        on_committed=lambda: committed.append(1),
    )


def message(value: bytes, offset: int = 0) -> ConsumedMessage:
    return ConsumedMessage(topic="sentinel.clinical.v1", partition=0, offset=offset, key=b"k", value=value)


async def test_same_message_twice_is_processed_once(
    tables: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    registry = CollectorRegistry()
    rule = Rule(make_sae)
    committed: list[int] = []
    handler = handler_for(tables, clock, rule, registry, committed)
    value = make_ae().model_dump_json().encode()

    assert await handler([message(value, offset=0)]) == []
    assert await handler([message(value, offset=7)]) == []  # re-delivered after a crash before the offset commit

    assert rule.calls == 1
    assert count(tables, OutboxMessage) == 1
    assert count(tables, ProcessedEvent) == 1
    assert committed == [1]
    sample = registry.get_sample_value
    assert sample("sentinel_safety_events_processed_total", {"outcome": "processed"}) == 1
    assert sample("sentinel_safety_events_processed_total", {"outcome": "duplicate"}) == 1
    with Session(tables) as session:
        row = session.execute(select(OutboxMessage)).scalar_one()
        assert row.topic == SIGNALS
        assert row.key == b"NCT07212335:S-001"
        assert row.sent_at is None
        assert row.created_at == clock.now()


async def test_two_different_events_are_both_processed(
    tables: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    rule = Rule(make_sae)
    handler = handler_for(tables, clock, rule, CollectorRegistry(), [])
    await handler([message(make_ae(version=1).model_dump_json().encode())])
    await handler([message(make_ae(version=2).model_dump_json().encode())])
    assert rule.calls == 2
    assert count(tables, OutboxMessage) == 2


@pytest.mark.parametrize("value", [b"\xff\xfe", b"not json", b"{}", b'{"type": "ae.reported"}'])
async def test_invalid_bytes_are_poison(tables: Engine, clock: FakeClock, make_sae: Any, value: bytes) -> None:
    rule = Rule(make_sae)
    handler = handler_for(tables, clock, rule, CollectorRegistry(), [])
    [rejected] = await handler([message(value)])
    assert isinstance(rejected.error, PoisonMessage)
    assert "invalid envelope" in str(rejected.error)
    assert rule.calls == 0
    assert count(tables, ProcessedEvent) == 0


async def test_rule_failure_rolls_back_the_inbox_claim(tables: Engine, clock: FakeClock, make_ae: Any) -> None:
    """A bug in the rule must not mark the event processed: it is rejected (for the DLQ), nothing of it stays."""

    def broken(session: Session, envelope: ClinicalEnvelope, now: datetime) -> Sequence[Outgoing]:
        raise RuntimeError("rule bug")

    handler = TransactionalHandler(
        engine=tables,
        consumer="safety",
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=broken,
        clock=clock,
        metrics=ConsumerMetrics.create(CollectorRegistry(), "safety"),
    )
    [rejected] = await handler([message(make_ae().model_dump_json().encode())])
    assert isinstance(rejected.error, RuntimeError)
    assert count(tables, ProcessedEvent) == 0
    assert count(tables, OutboxMessage) == 0


def test_claim_event_is_per_consumer(tables: Engine, clock: FakeClock) -> None:
    with Session(tables) as session, session.begin():
        kwargs: dict[str, Any] = {"topic": "t", "partition": 0, "offset": 1, "now": clock.now()}
        assert claim_event(session, consumer="safety", event_id="e1", **kwargs)
        assert not claim_event(session, consumer="safety", event_id="e1", **kwargs)
        assert claim_event(session, consumer="notify", event_id="e1", **kwargs)


def test_add_to_outbox_dedupes_by_message_id(tables: Engine, clock: FakeClock, make_sae: Any) -> None:
    outgoing = Outgoing(topic=SIGNALS, key=b"k", envelope=make_sae(signal_id="sig-1"))
    with Session(tables) as session, session.begin():
        assert add_to_outbox(session, producer="safety", message=outgoing, now=clock.now())
        session.flush()
        assert not add_to_outbox(session, producer="safety", message=outgoing, now=clock.now())
    assert count(tables, OutboxMessage) == 1


async def test_relay_publishes_in_order_and_marks_sent(
    tables: Engine, clock: FakeClock, make_sae: Any, publisher: Any
) -> None:
    with Session(tables) as session, session.begin():
        for n in range(3):
            outgoing = Outgoing(topic=SIGNALS, key=b"k", envelope=make_sae(signal_id=f"sig-{n}"))
            add_to_outbox(session, producer="safety", message=outgoing, now=clock.now())
    relay = OutboxRelay(
        engine=tables,
        publisher=publisher,
        producer="safety",
        clock=clock,
        metrics=OutboxMetrics.create(CollectorRegistry(), "safety"),
    )
    assert await relay.publish_pending() == 3
    assert [value.split(b'"id":"')[1][:5] for _, _, value in publisher.messages] == [b"sig-0", b"sig-1", b"sig-2"]
    assert await relay.publish_pending() == 0
    assert len(publisher.messages) == 3
    with Session(tables) as session:
        assert all(row.sent_at == clock.now() for row in session.execute(select(OutboxMessage)).scalars())


async def test_relay_keeps_rows_when_broker_is_down(
    tables: Engine, clock: FakeClock, make_sae: Any, publisher: Any
) -> None:
    with Session(tables) as session, session.begin():
        outgoing = Outgoing(topic=SIGNALS, key=b"k", envelope=make_sae(signal_id="sig-1"))
        add_to_outbox(session, producer="safety", message=outgoing, now=clock.now())
    publisher.down = True
    relay = OutboxRelay(
        engine=tables,
        publisher=publisher,
        producer="safety",
        clock=clock,
        metrics=OutboxMetrics.create(CollectorRegistry(), "safety"),
    )
    with pytest.raises(BrokerUnavailable):
        await relay.publish_pending()
    publisher.down = False
    assert await relay.publish_pending() == 1
    assert len(publisher.messages) == 1


class PoisonOn(Rule):
    """Like Rule, but refuses the events whose id is listed (as a rule refuses an event for another trial)."""

    def __init__(self, make_sae: Any, refused: set[str]) -> None:
        super().__init__(make_sae)
        self.refused = refused

    def __call__(self, session: Session, envelope: ClinicalEnvelope, now: datetime) -> Sequence[Outgoing]:
        if envelope.id in self.refused:
            raise PoisonMessage(f"refused {envelope.id}")
        return super().__call__(session, envelope, now)


async def test_a_batch_is_one_commit_and_a_poison_record_loses_nothing_else(
    tables: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    events = [make_ae(version=v) for v in range(1, 7)]
    rule = PoisonOn(make_sae, {events[1].id, events[4].id})
    committed: list[int] = []
    handler = handler_for(tables, clock, rule, CollectorRegistry(), committed)
    batch = [message(e.model_dump_json().encode(), offset=n) for n, e in enumerate(events)]
    batch.insert(3, message(b"not json", offset=99))

    rejected = await handler(batch)

    assert [r.message.offset for r in rejected] == [99, 1, 4]
    assert all(isinstance(r.error, PoisonMessage) for r in rejected)
    with Session(tables) as session:
        claimed = {row.event_id for row in session.execute(select(ProcessedEvent)).scalars()}
        signals = {row.message_id for row in session.execute(select(OutboxMessage)).scalars()}
    kept = {events[n].id for n in (0, 2, 3, 5)}
    assert claimed == kept
    assert signals == {f"signal-of-{event_id}" for event_id in kept}
    assert len(committed) == 3, "one wake-up per commit: before the first poison, before the second, the rest"


async def test_a_batch_without_poison_is_one_commit_and_a_slow_one_is_split(
    tables: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    """Signals must not wait for a long batch: past the time budget, what is done is committed (and relayed)."""
    events = [make_ae(version=v) for v in range(1, 5)]
    batch = [message(e.model_dump_json().encode(), offset=n) for n, e in enumerate(events)]
    committed: list[int] = []
    assert await handler_for(tables, clock, Rule(make_sae), CollectorRegistry(), committed)(batch) == []
    assert committed == [1]

    slow: list[int] = []
    handler = TransactionalHandler(
        engine=tables,
        consumer="notify",  # another consumer: the same events are new to it
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=Rule(make_sae),
        clock=clock,
        metrics=ConsumerMetrics.create(CollectorRegistry(), "notify"),
        on_committed=lambda: slow.append(1),
        transaction_seconds=0,
    )
    assert await handler(batch) == []
    assert len(slow) == 4, "every record over the budget: one commit each"
    with Session(tables) as session:
        rows = session.execute(select(ProcessedEvent).where(ProcessedEvent.consumer == "notify")).scalars().all()
    assert sorted(row.offset for row in rows) == [0, 1, 2, 3]


async def test_the_same_event_twice_in_one_batch_is_applied_once(
    tables: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    registry = CollectorRegistry()
    rule = Rule(make_sae)
    handler = handler_for(tables, clock, rule, registry, [])
    value = make_ae().model_dump_json().encode()
    assert await handler([message(value, offset=0), message(value, offset=1)]) == []
    assert rule.calls == 1
    assert count(tables, ProcessedEvent) == 1
    assert registry.get_sample_value("sentinel_safety_events_processed_total", {"outcome": "duplicate"}) == 1


async def test_a_transient_failure_commits_nothing_of_the_batch(
    tables: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    """The broker or database failing mid-batch: the loop re-delivers the batch, so none of it may be kept."""
    rule = Rule(make_sae)
    events = [make_ae(version=v) for v in (1, 2, 3)]

    def flaky(session: Session, envelope: ClinicalEnvelope, now: datetime) -> Sequence[Outgoing]:
        if envelope.id == events[2].id:
            raise BrokerUnavailable("gone")
        return rule(session, envelope, now)

    handler = handler_for(tables, clock, rule, CollectorRegistry(), [])
    handler._open = per_record(flaky)
    with pytest.raises(BrokerUnavailable):
        await handler([message(e.model_dump_json().encode(), offset=n) for n, e in enumerate(events)])
    assert count(tables, ProcessedEvent) == 0
    assert count(tables, OutboxMessage) == 0


async def test_relay_marks_a_whole_batch_sent(tables: Engine, clock: FakeClock, make_sae: Any, publisher: Any) -> None:
    with Session(tables) as session, session.begin():
        for n in range(7):
            outgoing = Outgoing(topic=SIGNALS, key=b"k", envelope=make_sae(signal_id=f"sig-{n}"))
            add_to_outbox(session, producer="safety", message=outgoing, now=clock.now())
    registry = CollectorRegistry()
    relay = OutboxRelay(
        engine=tables,
        publisher=publisher,
        producer="safety",
        clock=clock,
        metrics=OutboxMetrics.create(registry, "safety"),
        batch_size=3,
    )
    published, backlog = [], []
    for _ in range(4):
        published.append(await relay.publish_pending())
        backlog.append(registry.get_sample_value("sentinel_safety_outbox_backlog"))
    assert published == [3, 3, 1, 0]
    assert backlog == [4, 1, 0, 0], "what still waits after each batch: counted while behind, none after a short read"
    assert [value.split(b'"id":"')[1][:5] for _, _, value in publisher.messages] == [
        f"sig-{n}".encode() for n in range(7)
    ]
    assert registry.get_sample_value("sentinel_safety_outbox_backlog") == 0
    assert registry.get_sample_value("sentinel_safety_outbox_published_total") == 7


class Deferred:
    """A batched rule: records are noted as they come, and each one's signal is written in the deferred step,
    which fails whenever the batch holds the record `poison` (as a subject's reassessment would)."""

    def __init__(self, make_sae: Any, poison: str) -> None:
        self.make_sae, self.poison = make_sae, poison
        self.finished: list[list[str]] = []

    def __call__(self, session: Session, now: datetime, envelopes: Sequence[ClinicalEnvelope]) -> Any:
        rule = self

        class Batch:
            def __init__(self) -> None:
                self.ids: list[str] = []

            def apply(self, envelope: ClinicalEnvelope, *, live: bool = False) -> Sequence[Outgoing]:
                self.ids.append(envelope.id)
                return []

            def finish(self) -> Sequence[tuple[str, Outgoing]]:
                rule.finished.append(list(self.ids))
                if rule.poison in self.ids:
                    raise ValueError("reassessment bug")
                return [
                    (i, Outgoing(topic=SIGNALS, key=b"k", envelope=rule.make_sae(signal_id=f"signal-of-{i}")))
                    for i in self.ids
                ]

        return Batch()


async def test_a_failing_deferred_step_sets_aside_only_the_record_that_caused_it(
    tables: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    """The deferred step names no record: the batch is halved until the one at fault is alone; every other
    record of the batch is committed once, with its signal."""
    events = [make_ae(version=v) for v in range(1, 9)]
    rule = Deferred(make_sae, poison=events[5].id)
    handler = TransactionalHandler(
        engine=tables,
        consumer="safety",
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=rule,
        clock=clock,
        metrics=ConsumerMetrics.create(CollectorRegistry(), "safety"),
        batched=True,
    )
    messages = [message(e.model_dump_json().encode(), offset=n) for n, e in enumerate(events)]
    [rejected] = await handler(messages)
    assert rejected.message.offset == 5 and "reassessment bug" in str(rejected.error)
    assert count(tables, ProcessedEvent) == 7
    with Session(tables) as session:
        ids = {row.message_id for row in session.execute(select(OutboxMessage)).scalars()}
    assert len(ids) == 7 and all(events[5].id not in i for i in ids)
    assert [events[5].id] in rule.finished, "the record at fault was tried alone"
    assert len(rule.finished) <= 8, "halving, not one transaction per record after each failure"


async def test_relay_publishes_new_rows_while_marking_the_last_batch_waits(
    tables: Engine, clock: FakeClock, make_sae: Any, publisher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking sent is a write that can wait for the consumer's transaction (SQLite): the next committed row
    must not wait for it, and no row is published twice meanwhile."""
    relay = OutboxRelay(
        engine=tables,
        publisher=publisher,
        producer="safety",
        clock=clock,
        metrics=OutboxMetrics.create(CollectorRegistry(), "safety"),
        poll_seconds=3600,  # only the commits' wake-ups move it
    )
    marking, release = threading.Event(), threading.Event()
    mark_sent = relay._mark_sent

    def held(seqs: list[int]) -> None:
        marking.set()
        release.wait(timeout=10)
        mark_sent(seqs)

    monkeypatch.setattr(relay, "_mark_sent", held)

    def commit(signal_id: str) -> None:
        with Session(tables) as session, session.begin():
            outgoing = Outgoing(topic=SIGNALS, key=b"k", envelope=make_sae(signal_id=signal_id))
            add_to_outbox(session, producer="safety", message=outgoing, now=clock.now())
        relay.wake()

    def published() -> list[bytes]:
        return [value.split(b'"id":"')[1][:5] for _, _, value in publisher.messages]

    async def count(expected: int) -> bool:
        return len(publisher.messages) >= expected

    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        commit("sig-0")
        await asyncio.to_thread(marking.wait, 10)  # sig-0 is published; marking it sent is held
        commit("sig-1")
        await await_for(lambda: count(2), timeout=5, interval=0.01, what="sig-1 published")
        relay.wake()  # another round while sig-0 and sig-1 are still unmarked: nothing is published again
        commit("sig-2")
        await await_for(lambda: count(3), timeout=5, interval=0.01, what="sig-2 published")
        release.set()
    finally:
        stop.set()
        relay.wake()
        await asyncio.wait_for(running, timeout=10)
    assert published() == [b"sig-0", b"sig-1", b"sig-2"]
    with Session(tables) as session:
        assert all(row.sent_at == clock.now() for row in session.execute(select(OutboxMessage)).scalars())


class OriginRule:
    """A batched rule that notes, per event, whether the handler said it came live (not on a bulk lane)."""

    def __init__(self) -> None:
        self.seen: dict[str, bool] = {}

    def apply(self, envelope: ClinicalEnvelope, *, live: bool = False) -> Sequence[Outgoing]:
        self.seen[envelope.id] = live
        return ()

    def finish(self) -> Sequence[tuple[str, Outgoing]]:
        return ()


async def test_the_rule_hears_which_records_came_on_a_bulk_lane(tables: Engine, clock: FakeClock, make_ae: Any) -> None:
    """What a record raises is urgent by origin when it came on its own (shared.lanes): the rule is told."""
    rule = OriginRule()
    handler = TransactionalHandler(
        engine=tables,
        consumer="safety",
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=lambda _session, _now, _records: rule,
        batched=True,
        clock=clock,
        metrics=ConsumerMetrics.create(CollectorRegistry(), "safety"),
        on_committed=lambda: None,
    )
    entered, backfilled = make_ae(sender_id="entered"), make_ae(sender_id="backfilled", ae_id="AE-2")
    await handler(
        [
            ConsumedMessage("sentinel.clinical.v1", 0, 0, b"k", entered.model_dump_json().encode()),
            ConsumedMessage("sentinel.clinical.v1.bulk", 0, 0, b"k", backfilled.model_dump_json().encode()),
        ]
    )
    assert rule.seen == {entered.id: True, backfilled.id: False}
