"""Durable timers on a real database: two notifier timer runners racing over many due timers fire every
step exactly once, queue every message once, and keep the audit chain unbroken (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.notify import models
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.metrics import TimerMetrics
from services.notify.models import Delivery, Timer
from services.notify.signals import apply_signal
from services.notify.timers import TimerRunner
from shared.audit import verify_chain
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import SaeDetected
from shared.protocol import load_protocol
from tests.signal_factories import RecordingChannel, sae_detected

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
DUE = START + timedelta(hours=24)
ALERTS = 30


def sae(i: int) -> SaeDetected:
    return sae_detected(
        f"S-{i:03d}", aware=START, signal_id=f"sig-{i}", ae_id=f"AE-{i}", onset="2026-11-25", source_event_id=f"src-{i}"
    )


def test_two_runners_fire_every_step_exactly_once(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, models.TABLES)
    protocol = load_protocol(None)
    with Session(engine) as session, session.begin():
        for i in range(ALERTS):
            apply_signal(session, sae(i), START, protocol=protocol)
    clock = FakeClock(START)
    runners = [
        TimerRunner(engine=engine, protocol=protocol, clock=clock, metrics=TimerMetrics.create(CollectorRegistry()))
        for _ in range(2)
    ]
    moments = [
        START + timedelta(minutes=30),
        START + timedelta(minutes=90),
        DUE - timedelta(hours=12),
        DUE - timedelta(hours=4),
        DUE - timedelta(hours=1),
        DUE + timedelta(microseconds=1),
        DUE + timedelta(hours=1),
    ]
    handled: list[int] = []

    def race(runner: TimerRunner, now: datetime) -> None:
        while True:
            count = runner.fire_due(now, limit=4)
            handled.append(count)
            if count == 0:
                return

    for now in moments:
        threads = [threading.Thread(target=race, args=(r, now)) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    with Session(engine) as session:
        fired = session.exec(select(Timer).where(Timer.state == "fired")).all()
        deliveries = session.exec(select(Delivery)).all()
    per_kind = Counter(t.kind for t in fired)
    assert per_kind == {"escalate": 2 * ALERTS, "reminder": 3 * ALERTS, "overdue": 2 * ALERTS}
    assert sum(handled) == len(fired), "no timer handled twice"
    # Per alert: initial 2 + step 2 (1) + step 3 (1) + 3 reminders x 2 + 2 overdue pages x 3 recipients.
    assert len(deliveries) == ALERTS * 16
    checked, problems = verify_chain(engine, service="notify")
    assert problems == [], problems[:3]
    assert checked == ALERTS * 8, "opened + 7 fired timers per alert"

    channel = RecordingChannel()
    clock.set(DUE + timedelta(hours=1))
    dispatchers = [
        DeliveryDispatcher(
            engine=engine,
            channel=channel,
            clock=clock,
            metrics=DeliveryMetrics.create(CollectorRegistry()),
            max_attempts=3,
            base_backoff_seconds=1,
        )
        for _ in range(2)
    ]

    async def drain() -> None:
        while sum(await asyncio.gather(*(d.dispatch_due(limit=13) for d in dispatchers))):
            pass

    asyncio.run(drain())
    counts = Counter(channel.sent)
    assert len(counts) == ALERTS * 16
    assert max(counts.values()) == 1
    assert verify_chain(engine, service="notify")[1] == []
    engine.dispose()
