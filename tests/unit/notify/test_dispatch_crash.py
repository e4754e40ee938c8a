"""Issue 15, defect 4: a crash between the SMTP hand-off and the commit.

Before the fix the lease ran 5 minutes, the retry had a new Message-ID and nothing said it was a retry.
Now: the attempt is committed before the hand-off, the lease is short and renewed by a heartbeat, and the
retry carries the same Message-ID, says it may be a duplicate, and is in the alert's history.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from services.notify import models
from services.notify.dispatcher import LEASE, DeliveryDispatcher, DeliveryMetrics
from services.notify.models import Delivery
from services.notify.signals import apply_signal
from services.notify.store import history_for
from shared.clock import FakeClock
from shared.db import create_tables
from shared.protocol import Protocol
from tests.unit.conftest import FakeChannel

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class DiesAfterHandOff(FakeChannel):
    """The SMTP server has the mail; then the process is killed before it can record that."""

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)
        raise asyncio.CancelledError("kill -9 after the hand-off")


class FrozenAfterHandOff(FakeChannel):
    """The SMTP server has the mail; the process then stops dead (cancelled from outside, like kill -9)."""

    def __init__(self) -> None:
        super().__init__()
        self.handed_over = asyncio.Event()

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)
        self.handed_over.set()
        await asyncio.Event().wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def db(engine: Engine, protocol: Protocol, make_sae: Any) -> Engine:
    create_tables(engine, models.TABLES)
    with Session(engine) as session, session.begin():
        apply_signal(session, make_sae(), START, protocol=protocol)
    return engine


def dispatcher(db: Engine, channel: FakeChannel, clock: FakeClock, **options: Any) -> DeliveryDispatcher:
    return DeliveryDispatcher(
        engine=db,
        channel=channel,
        clock=clock,
        metrics=DeliveryMetrics.create(CollectorRegistry()),
        max_attempts=3,
        base_backoff_seconds=10,
        **options,
    )


def rows(db: Engine) -> list[Delivery]:
    with Session(db) as session:
        return list(session.exec(select(Delivery).order_by(col(Delivery.id))).all())


async def test_a_crash_after_the_hand_off_is_retaken_in_seconds_with_the_same_message_id(
    db: Engine, clock: FakeClock
) -> None:
    crashed = DiesAfterHandOff()
    with pytest.raises(asyncio.CancelledError):
        await dispatcher(db, crashed, clock).dispatch_due(limit=1)
    [first] = crashed.sent
    [interrupted] = [d for d in rows(db) if d.id == first["X-Sentinel-Delivery"]]
    assert interrupted.attempts == 1 and interrupted.attempt_started_at == START, "recorded before the hand-off"
    assert interrupted.status == "pending"

    survivor = FakeChannel()
    other = dispatcher(db, survivor, clock)
    assert await other.dispatch_due() == 1, "the other delivery goes; the interrupted one is still leased"
    assert timedelta(seconds=60) >= LEASE, "a crashed holder's work is retaken in seconds, not minutes"
    clock.advance(LEASE + timedelta(seconds=1))
    assert await other.dispatch_due() == 1
    again = survivor.sent[-1]
    assert again["X-Sentinel-Delivery"] == first["X-Sentinel-Delivery"]
    assert again["Message-ID"] == first["Message-ID"], "a mail client merges the rare duplicate"
    assert again["X-Sentinel-Attempt"] == "2" and first["X-Sentinel-Attempt"] == "1"
    assert again["X-Sentinel-Possible-Duplicate"] is not None
    [delivery] = [d for d in rows(db) if d.id == interrupted.id]
    assert delivery.status == "sent" and delivery.attempts == 2 and delivery.attempt_started_at is None
    with Session(db) as session:
        history = history_for(session, alert_id=delivery.alert_id)
    [note] = [h for h in history if h.action == "delivery_interrupted"]
    assert "attempt 1" in note.detail and "may duplicate" in note.detail
    assert note.facts["delivery_id"] == delivery.id
    assert any(h.action == "delivered" and "(attempt 2)" in h.detail for h in history)


async def test_message_id_is_the_same_on_every_attempt(db: Engine, clock: FakeClock) -> None:
    channel = FakeChannel()
    channel.failures = 2  # both deliveries fail once
    sender = dispatcher(db, channel, clock)
    await sender.dispatch_due()
    clock.advance(timedelta(minutes=1))
    await sender.dispatch_due()
    ids = {str(m["X-Sentinel-Delivery"]): str(m["Message-ID"]) for m in channel.sent}
    assert len(ids) == 2
    for delivery_id, message_id in ids.items():
        assert message_id == f"<{delivery_id}@test>"


async def test_a_live_senders_heartbeat_keeps_its_lease(db: Engine, clock: FakeClock) -> None:
    slow = FakeChannel()
    other_channel = FakeChannel()
    renewed = asyncio.Event()
    holder = dispatcher(db, slow, clock, heartbeat_seconds=0.01)
    other = dispatcher(db, other_channel, clock)
    raced: list[int] = []

    async def send_takes_longer_than_a_lease() -> None:
        if renewed.is_set():
            return
        for _ in range(3):  # three leases' worth of time pass while the SMTP server dawdles
            clock.advance(LEASE - timedelta(seconds=1))
            await _until_renewed(db, after=clock.now())
            raced.append(await other.dispatch_due())
        renewed.set()

    slow.during_send = send_takes_longer_than_a_lease
    assert await holder.dispatch_due(limit=1) == 1
    assert raced[0] == 1 and raced[1:] == [0, 0], "only the delivery nobody held was taken by the other replica"
    assert len(slow.sent) == 1 and len(other_channel.sent) == 1
    assert {str(m["X-Sentinel-Delivery"]) for m in [*slow.sent, *other_channel.sent]} == {d.id for d in rows(db)}


async def _until_renewed(db: Engine, *, after: datetime) -> None:
    """Poll (with a deadline) until the heartbeat has pushed a lease past `after`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        with Session(db) as session:
            leases = [d.leased_until for d in session.exec(select(Delivery)).all() if d.leased_until is not None]
        if any(lease > after for lease in leases):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the heartbeat never renewed the lease")


def test_the_heartbeat_must_beat_within_the_lease(db: Engine, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        dispatcher(db, FakeChannel(), clock, lease=timedelta(seconds=10), heartbeat_seconds=10)


async def test_a_message_that_kills_its_sender_every_time_fails_over_instead_of_looping(
    db: Engine, clock: FakeClock
) -> None:
    """max_attempts interrupted attempts: the next claim fails it visibly and hands it to the next tier."""
    killer = DiesAfterHandOff()
    for _ in range(3):  # max_attempts = 3
        with pytest.raises(asyncio.CancelledError):
            await dispatcher(db, killer, clock).dispatch_due(limit=1)
        clock.advance(LEASE + timedelta(seconds=1))
    [victim] = {str(m["X-Sentinel-Delivery"]) for m in killer.sent}
    assert len(killer.sent) == 3
    survivor = FakeChannel()
    assert await dispatcher(db, survivor, clock).dispatch_due() == 2
    assert victim not in {str(m["X-Sentinel-Delivery"]) for m in survivor.sent}, "not a fourth time"
    [delivery] = [d for d in rows(db) if d.id == victim]
    assert delivery.status == "failed" and delivery.attempts == 3 and delivery.leased_until is None
    with Session(db) as session:
        history = history_for(session, alert_id=delivery.alert_id)
    [failed] = [h for h in history if h.action == "delivery_failed"]
    assert "stopped during each of its 3 attempts" in failed.detail


async def test_a_crash_marks_only_what_was_in_flight(db: Engine, clock: FakeClock) -> None:
    """Both deliveries are claimed in one batch; one at a time is handed over; the kill hits the first."""
    crashed = FrozenAfterHandOff()
    run = asyncio.create_task(dispatcher(db, crashed, clock, concurrency=1).dispatch_due())
    await asyncio.wait_for(crashed.handed_over.wait(), timeout=5)
    run.cancel()  # the process is gone: nothing after this point runs
    with pytest.raises(asyncio.CancelledError):
        await run
    [in_flight] = crashed.sent
    by_id = {d.id: d for d in rows(db)}
    assert by_id.pop(str(in_flight["X-Sentinel-Delivery"])).attempt_started_at == START
    [waiting] = by_id.values()
    assert waiting.attempts == 0 and waiting.attempt_started_at is None, "never started: no false duplicate mark"
    clock.advance(LEASE + timedelta(seconds=1))
    survivor = FakeChannel()
    assert await dispatcher(db, survivor, clock).dispatch_due() == 2
    marked = {str(m["X-Sentinel-Delivery"]) for m in survivor.sent if m["X-Sentinel-Possible-Duplicate"]}
    assert marked == {str(in_flight["X-Sentinel-Delivery"])}


async def test_a_hand_off_whose_record_fails_is_recorded_once_the_database_is_back(
    db: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk between the hand-off and its record: the record is retried in place (the lease still held),
    so the page is marked sent when the disk frees, and nobody sends it again when the lease would have ended."""
    channel = FakeChannel()
    sender = dispatcher(db, channel, clock, poll_seconds=0.01)
    record_sent = sender._record_sent
    refusals: list[int] = []

    def full_disk_twice(unit: Any) -> None:
        if len(refusals) < 2:
            refusals.append(1)
            raise OperationalError("UPDATE delivery", {}, Exception("database or disk is full"))
        record_sent(unit)

    monkeypatch.setattr(sender, "_record_sent", full_disk_twice)
    assert await sender.dispatch_due(limit=1) == 1
    assert len(refusals) == 2 and len(channel.sent) == 1
    [sent] = [d for d in rows(db) if d.id == channel.sent[0]["X-Sentinel-Delivery"]]
    assert sent.status == "sent" and sent.leased_by is None and sent.attempts == 1
    clock.advance(LEASE + timedelta(seconds=1))
    assert await dispatcher(db, FakeChannel(), clock).dispatch_due() == 1, "only the other delivery is still due"
    with Session(db) as session:
        history = history_for(session, alert_id=sent.alert_id)
    assert [h.action for h in history if h.facts.get("delivery_id") == sent.id].count("delivered") == 1


async def test_a_write_that_is_not_a_database_outage_is_not_retried(db: Engine, clock: FakeClock) -> None:
    sender = dispatcher(db, FakeChannel(), clock)

    def broken(unit: Any) -> None:
        raise ValueError("a bug, not an outage")

    sender._record_sent = broken  # type: ignore[method-assign]
    with pytest.raises(ValueError):
        await sender.dispatch_due(limit=1)
