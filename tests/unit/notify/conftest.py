"""A notifier on a fake clock: apply signals, fire timers, send deliveries, read what people received."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.notify import models
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.metrics import TimerMetrics
from services.notify.models import Alert, Delivery, Obligation, Timer
from services.notify.signals import apply_signal
from services.notify.store import HistoryEntry, history_for
from services.notify.timers import TimerRunner
from shared.clock import FakeClock
from shared.db import create_tables
from shared.protocol import Protocol
from tests.unit.conftest import FakeChannel


@dataclass
class Notifier:
    engine: Engine
    protocol: Protocol
    clock: FakeClock
    channel: FakeChannel = field(default_factory=FakeChannel)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    webhook: Any = None

    def __post_init__(self) -> None:
        self.timers = self.new_runner(self.registry)
        self.dispatcher = DeliveryDispatcher(
            engine=self.engine,
            channel=self.channel,
            clock=self.clock,
            metrics=DeliveryMetrics.create(self.registry),
            max_attempts=3,
            base_backoff_seconds=10,
            on_failover=self.timers.wake,
            webhook=self.webhook,
        )

    def new_runner(self, registry: CollectorRegistry | None = None) -> TimerRunner:
        return TimerRunner(
            engine=self.engine,
            protocol=self.protocol,
            clock=self.clock,
            metrics=TimerMetrics.create(registry or CollectorRegistry()),
            late_after=timedelta(minutes=1),
        )

    def apply(self, signal: Any) -> None:
        with Session(self.engine) as session, session.begin():
            apply_signal(session, signal, self.clock.now(), protocol=self.protocol)

    async def at(self, moment: datetime) -> list[tuple[str, str]]:
        """Move the clock, fire due timers, send due deliveries; returns (recipient, subject) sent now."""
        self.clock.set(moment)
        before = len(self.channel.sent)
        while await self.timers.run_due() or await self.dispatcher.dispatch_due():
            pass
        return [(str(m["To"]), str(m["Subject"])) for m in self.channel.sent[before:]]

    def only(self, model: Any) -> Any:
        with Session(self.engine, expire_on_commit=False) as session:
            [row] = session.exec(select(model)).all()
            return row

    def rows(self, model: Any, **where: Any) -> list[Any]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(model)
            for name, value in where.items():
                query = query.where(getattr(model, name) == value)
            return list(session.exec(query).all())

    def history(self, alert_id: str | None = None) -> list[HistoryEntry]:
        with Session(self.engine) as session:
            return history_for(session, alert_id=alert_id or self.only(Alert).id)

    def pending(self) -> list[Timer]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(select(Timer).where(Timer.state == "pending").order_by(col(Timer.due_at))).all())

    def obligation(self) -> Obligation:
        row: Obligation = self.only(Obligation)
        return row

    def deliveries(self) -> list[Delivery]:
        return self.rows(Delivery)


@pytest.fixture
def notifier(engine: Engine, protocol: Protocol, clock: FakeClock) -> Notifier:
    create_tables(engine, models.TABLES)
    return Notifier(engine=engine, protocol=protocol, clock=clock)


def act(notifier: Notifier, what: str, **kwargs: Any) -> Any:
    """An officer action through the service layer, in its own transaction, like the API does."""
    from services.notify import alert_actions, store

    now = notifier.clock.now()
    with Session(notifier.engine, expire_on_commit=False) as session, session.begin():
        store.lock_audit(session)
        alert = session.exec(select(Alert)).one() if "alert" not in kwargs else kwargs.pop("alert")
        if what in ("complete", "cancel"):
            obligation = kwargs.pop("obligation", None) or session.exec(select(Obligation)).one()
            if what == "complete":
                kwargs.setdefault("comment", None)
                kwargs.setdefault("at", now)
            return getattr(alert_actions, what)(session, alert=alert, obligation=obligation, now=now, **kwargs)
        if what == "acknowledge":
            kwargs.setdefault("comment", None)
        return getattr(alert_actions, what)(session, alert=alert, now=now, **kwargs)
