"""Durable deliveries: sent once, retried with backoff, failed visibly, never sent twice by two replicas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from services.notify import models
from services.notify.dispatcher import LEASE, DeliveryDispatcher, DeliveryMetrics, retry_delay
from services.notify.models import Delivery
from services.notify.signals import apply_signal
from services.notify.store import HistoryEntry, history_for
from shared.clock import FakeClock
from shared.db import create_tables
from shared.protocol import Protocol
from tests.unit.conftest import FakeChannel

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def db(engine: Engine, protocol: Protocol, make_sae: Any) -> Engine:
    create_tables(engine, models.TABLES)
    with Session(engine) as session, session.begin():
        apply_signal(session, make_sae(), START, protocol=protocol)
    return engine


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def dispatcher(db: Engine, channel: FakeChannel, clock: FakeClock, registry: CollectorRegistry | None = None) -> Any:
    return DeliveryDispatcher(
        engine=db,
        channel=channel,
        clock=clock,
        metrics=DeliveryMetrics.create(registry or CollectorRegistry()),
        max_attempts=3,
        base_backoff_seconds=10,
    )


def deliveries(db: Engine) -> list[Delivery]:
    with Session(db) as session:
        return list(session.execute(select(Delivery).order_by(col(Delivery.recipient))).scalars().all())


def history(db: Engine) -> list[HistoryEntry]:
    with Session(db) as session:
        [alert_id] = {d.alert_id for d in session.execute(select(Delivery)).scalars()}
        return history_for(session, alert_id=alert_id)


async def test_each_delivery_is_sent_once(db: Engine, clock: FakeClock, registry: CollectorRegistry) -> None:
    channel = FakeChannel()
    sender = dispatcher(db, channel, clock, registry)
    assert await sender.dispatch_due() == 2
    assert await sender.dispatch_due() == 0
    clock.advance(timedelta(hours=1))
    assert await sender.dispatch_due() == 0
    assert sorted(m["To"] for m in channel.sent) == [
        "medical.monitor@sentinel.example",
        "safety.officer@sentinel.example",
    ]
    message = channel.sent[0]
    assert message["X-Sentinel-Delivery"] in {d.id for d in deliveries(db)}
    assert "NCT07212335" in message["Subject"]
    assert all(d.status == "sent" and d.attempts == 1 and d.sent_at == START for d in deliveries(db))
    assert [h.action for h in history(db)].count("delivered") == 2
    assert registry.get_sample_value("sentinel_notify_deliveries_total", {"channel": "email", "outcome": "sent"}) == 2


async def test_failure_schedules_a_retry_with_backoff(db: Engine, clock: FakeClock) -> None:
    channel = FakeChannel()
    channel.failures = 2
    sender = dispatcher(db, channel, clock)
    assert await sender.dispatch_due() == 2
    assert channel.sent == []
    pending = deliveries(db)
    for delivery in pending:
        assert delivery.status == "pending"
        assert delivery.attempts == 1
        assert delivery.last_error == "SMTP 451 try later"
        assert delivery.leased_until is None
        assert delivery.next_attempt_at == START + retry_delay(delivery.id, 1, 10)
        assert timedelta(seconds=10) <= delivery.next_attempt_at - START <= timedelta(seconds=15)
    assert [h.action for h in history(db)].count("delivery_retry") == 2

    earliest = min(d.next_attempt_at for d in pending)
    clock.set(earliest - timedelta(microseconds=1))
    assert await sender.dispatch_due() == 0, "nothing is re-sent before next_attempt_at"
    clock.set(max(d.next_attempt_at for d in pending))
    assert await sender.dispatch_due() == 2
    assert len(channel.sent) == 2
    assert all(d.status == "sent" and d.attempts == 2 for d in deliveries(db))


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    delays = [retry_delay("d-1", attempt, 5).total_seconds() for attempt in range(1, 6)]
    for attempt, seconds in enumerate(delays, start=1):
        base = 5 * 2 ** (attempt - 1)
        assert base <= seconds <= base * 1.5
    assert retry_delay("d-1", 3, 5) == retry_delay("d-1", 3, 5)
    assert retry_delay("d-1", 30, 5) <= timedelta(hours=1.5)


async def test_after_max_attempts_the_delivery_fails_visibly(
    db: Engine, clock: FakeClock, registry: CollectorRegistry
) -> None:
    channel = FakeChannel()
    channel.failures = 100
    sender = dispatcher(db, channel, clock, registry)
    for _ in range(5):
        await sender.dispatch_due()
        clock.advance(timedelta(hours=2))
    assert all(d.status == "failed" and d.attempts == 3 for d in deliveries(db))
    failed = [h for h in history(db) if h.action == "delivery_failed"]
    assert len(failed) == 2
    assert "after 3 attempts" in failed[0].detail
    assert registry.get_sample_value("sentinel_notify_deliveries_total", {"channel": "email", "outcome": "failed"}) == 2
    assert await sender.dispatch_due() == 0


async def test_two_dispatchers_never_send_one_delivery_twice(db: Engine, clock: FakeClock) -> None:
    first_channel, second_channel = FakeChannel(), FakeChannel()
    first = dispatcher(db, first_channel, clock)
    second = dispatcher(db, second_channel, clock)
    raced: list[int] = []

    async def other_replica_runs() -> None:
        raced.append(await second.dispatch_due())

    first_channel.during_send = other_replica_runs
    assert await first.dispatch_due() == 2
    assert raced == [0, 0], "while the first replica holds the leases, the second finds nothing to send"
    assert await second.dispatch_due() == 0
    assert len(first_channel.sent) == 2
    assert second_channel.sent == []


async def test_lease_of_a_crashed_sender_expires(db: Engine, clock: FakeClock) -> None:
    crashed = FakeChannel()

    async def crash() -> None:
        raise asyncio.CancelledError("process stopped mid-send")  # not an error it could record: it just stops

    crashed.during_send = crash
    with pytest.raises(asyncio.CancelledError):
        await dispatcher(db, crashed, clock).dispatch_due(limit=1)
    survivor = FakeChannel()
    other = dispatcher(db, survivor, clock)
    assert await other.dispatch_due() == 1, "the leased delivery waits; the other one is sent"
    clock.advance(LEASE + timedelta(seconds=1))
    assert await other.dispatch_due() == 1
    assert len(survivor.sent) == 2
