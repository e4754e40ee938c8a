"""The consumer's transactional step: inbox claim + rule + outbox rows in one commit, idempotent by event id."""

from __future__ import annotations

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
from shared.processing import TransactionalHandler

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

    await handler(message(value, offset=0))
    await handler(message(value, offset=7))  # re-delivered after a crash before the offset commit

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
    await handler(message(make_ae(version=1).model_dump_json().encode()))
    await handler(message(make_ae(version=2).model_dump_json().encode()))
    assert rule.calls == 2
    assert count(tables, OutboxMessage) == 2


@pytest.mark.parametrize("value", [b"\xff\xfe", b"not json", b"{}", b'{"type": "ae.reported"}'])
async def test_invalid_bytes_are_poison(tables: Engine, clock: FakeClock, make_sae: Any, value: bytes) -> None:
    rule = Rule(make_sae)
    handler = handler_for(tables, clock, rule, CollectorRegistry(), [])
    with pytest.raises(PoisonMessage, match="invalid envelope"):
        await handler(message(value))
    assert rule.calls == 0
    assert count(tables, ProcessedEvent) == 0


async def test_rule_failure_rolls_back_the_inbox_claim(tables: Engine, clock: FakeClock, make_ae: Any) -> None:
    """A crash inside the rule must not mark the event processed, or the retry would skip it."""

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
    with pytest.raises(RuntimeError):
        await handler(message(make_ae().model_dump_json().encode()))
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
