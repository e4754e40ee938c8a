"""Notify's service layer on SQLite: one alert per AE thread, one obligation, one delivery per recipient."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from services.notify import models
from services.notify.models import Alert, Delivery, Obligation
from services.notify.signals import apply_signal
from services.notify.store import history_for
from shared.clock import FakeClock
from shared.db import create_tables
from shared.events import SIGNAL_ADAPTER
from shared.inbox import ProcessedEvent
from shared.kafka import ConsumedMessage, PoisonMessage
from shared.metrics import ConsumerMetrics
from shared.outbox import OutboxMessage
from shared.processing import TransactionalHandler
from shared.protocol import Protocol

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_tables(engine, [*models.TABLES, ProcessedEvent, OutboxMessage])
    return engine


@pytest.fixture
def apply(db: Engine, protocol: Protocol) -> Iterator[Any]:
    def run(signal: Any, now: datetime = NOW) -> None:
        with Session(db) as session, session.begin():
            assert apply_signal(session, signal, now, protocol=protocol) == []

    yield run


def rows(db: Engine, model: Any) -> list[Any]:
    with Session(db, expire_on_commit=False) as session:
        order = col(model.seq) if hasattr(model, "seq") else col(model.id)
        return list(session.execute(select(model).order_by(order)).scalars().all())


def history(db: Engine) -> list[Any]:
    with Session(db) as session:
        [alert] = session.execute(select(Alert)).scalars().all()
        return history_for(session, alert_id=alert.id)


def count(db: Engine, model: Any) -> int:
    with Session(db) as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_sae_detected_opens_alert_obligation_and_one_delivery_per_recipient(
    db: Engine, apply: Any, make_sae: Any
) -> None:
    aware = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    apply(make_sae(awareness_at=aware))
    [alert] = rows(db, Alert)
    [obligation] = rows(db, Obligation)
    deliveries = rows(db, Delivery)
    assert alert.state == "open"
    assert (alert.trial_id, alert.site_id, alert.subject_id) == ("NCT07212335", "SITE-1", "S-001")
    assert obligation.alert_id == alert.id
    assert obligation.due_at == aware + timedelta(hours=24)
    assert obligation.state == "open"
    assert sorted(d.recipient for d in deliveries) == [
        "medical.monitor@sentinel.example",
        "safety.officer@sentinel.example",
    ]
    assert all(d.status == "pending" and d.next_attempt_at == NOW for d in deliveries)
    assert [h.action for h in history(db)] == ["opened"]


def test_duplicate_sae_detected_creates_nothing_new(db: Engine, apply: Any, make_sae: Any) -> None:
    signal = make_sae()
    apply(signal)
    apply(signal, NOW + timedelta(minutes=5))
    assert count(db, Alert) == 1
    assert count(db, Obligation) == 1
    assert count(db, Delivery) == 2


async def test_redelivered_signal_through_the_consumer_changes_nothing(
    db: Engine, protocol: Protocol, make_sae: Any
) -> None:
    from functools import partial

    handler = TransactionalHandler(
        engine=db,
        consumer="notify",
        parse=SIGNAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=partial(apply_signal, protocol=protocol),
        clock=FakeClock(NOW),
        metrics=ConsumerMetrics.create(CollectorRegistry(), "notify"),
    )
    value = make_sae().model_dump_json().encode()
    for offset in (0, 1):
        message = ConsumedMessage(topic="sentinel.signals.v1", partition=0, offset=offset, key=b"k", value=value)
        assert await handler([message]) == []
    assert count(db, Alert) == 1
    assert count(db, Delivery) == 2
    assert len(history(db)) == 1


def test_worse_update_queues_new_deliveries_and_reopens(db: Engine, apply: Any, make_sae: Any) -> None:
    apply(make_sae())
    with Session(db) as session, session.begin():
        alert = session.execute(select(Alert)).scalar_one()
        alert.state = "acknowledged"
        alert.acknowledged_at = NOW
        alert.acknowledged_by = "officer"
    apply(make_sae(kind="updated", ae_version=2, grade=4), NOW + timedelta(hours=2))
    [alert] = rows(db, Alert)
    assert alert.state == "open"
    assert alert.details["grade"] == 4
    deliveries = rows(db, Delivery)
    assert len(deliveries) == 4
    new = [d for d in deliveries if d.created_at == NOW + timedelta(hours=2)]
    assert len(new) == 2
    assert all("grade increased to 4" in d.body_text for d in new)
    assert count(db, Obligation) == 1
    entries = history(db)
    assert entries[-1].action == "follow_up"
    assert "grade increased to 4" in entries[-1].detail


def test_identical_update_adds_history_only(db: Engine, apply: Any, make_sae: Any) -> None:
    apply(make_sae())
    with Session(db) as session, session.begin():
        session.execute(select(Alert)).scalar_one().state = "acknowledged"
    apply(make_sae(kind="updated", ae_version=2), NOW + timedelta(hours=1))
    [alert] = rows(db, Alert)
    assert alert.state == "acknowledged"
    assert count(db, Delivery) == 2
    assert [h.action for h in history(db)] == ["opened", "follow_up"]
    assert "no worsening" in history(db)[-1].detail


def test_update_does_not_move_the_deadline(db: Engine, apply: Any, make_sae: Any) -> None:
    aware = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    apply(make_sae(awareness_at=aware))
    apply(make_sae(kind="updated", ae_version=2, grade=5, awareness_at=aware + timedelta(days=1)))
    [obligation] = rows(db, Obligation)
    assert obligation.due_at == aware + timedelta(hours=24)


def test_signal_for_another_trial_is_poison(db: Engine, apply: Any, make_sae: Any) -> None:
    with pytest.raises(PoisonMessage):
        apply(make_sae(trial="NCT00000000"))
    assert count(db, Alert) == 0
