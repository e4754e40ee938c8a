"""SAE withdrawals on a real database (SQLite and PostgreSQL), racing what else touches an SAE's alert: two timer
runners firing its reminders at the instant the withdrawals arrive, and a dispatcher holding a page's lease.

Whatever wins each race: after the withdrawal no reminder or overdue page of a withdrawn SAE is left to send, each
page a sender held goes out and its recipient hears of the withdrawal, nothing is sent twice, and the audit chain
holds."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.notify import models, store
from services.notify.metrics import TimerMetrics
from services.notify.models import Alert, Delivery, Obligation, Timer
from services.notify.signals import apply_signal
from services.notify.timers import TimerRunner
from shared.audit import verify_chain
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.protocol import load_protocol
from tests.signal_factories import sae_detected, sae_withdrawn

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
REMINDER = START + timedelta(hours=12)
"""The first reminder (12 h before the 24 h deadline): the withdrawals arrive in this instant."""
ALERTS = 12


def test_withdrawals_racing_the_reminders_leave_nothing_of_them_to_send(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, models.TABLES)
    protocol = load_protocol(None)
    with Session(engine) as session, session.begin():
        for i in range(ALERTS):
            signal = sae_detected(f"S-{i:03d}", aware=START, signal_id=f"sig-{i}")
            apply_signal(session, signal, START, protocol=protocol)
    with Session(engine) as session, session.begin():  # every page of the first round went out
        for delivery in session.exec(select(Delivery)):
            delivery.status, delivery.sent_at = "sent", START
    with Session(engine) as session, session.begin():  # a sender holds one page of S-000 (an escalation, say)
        held = session.exec(select(Delivery).join(Alert).where(Alert.subject_id == "S-000")).first()
        assert held is not None
        held.status, held.sent_at = "pending", None
        held_id = held.id
        session.flush()
        assert store.lease_delivery(
            session, delivery_id=held_id, now=REMINDER, until=REMINDER + timedelta(seconds=15), holder="sender-1"
        )
    clock = FakeClock(REMINDER)
    runners = [
        TimerRunner(engine=engine, protocol=protocol, clock=clock, metrics=TimerMetrics.create(CollectorRegistry()))
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def fire(runner: TimerRunner) -> None:
        try:
            while runner.fire_due(REMINDER, limit=3):
                pass
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def withdraw() -> None:
        try:
            for i in range(ALERTS):
                signal = sae_withdrawn(f"S-{i:03d}", aware=START, at=REMINDER, signal_id=f"wd-{i}")
                with Session(engine) as session, session.begin():
                    apply_signal(session, signal, REMINDER, protocol=protocol)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fire, args=(r,)) for r in runners] + [threading.Thread(target=withdraw)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    for moment in (REMINDER + timedelta(hours=8), START + timedelta(hours=23), START + timedelta(hours=26)):
        runners[0].fire_due(moment)  # the later reminders and the overdue page: nothing left to fire
    with Session(engine) as session:
        obligations = session.exec(select(Obligation)).all()
        assert {(o.state, o.cancelled_by) for o in obligations} == {("cancelled", "system")}
        assert session.exec(select(Timer).where(Timer.state == "pending")).all() == []
        deliveries = session.exec(select(Delivery)).all()
        reminders_left = [d for d in deliveries if "Reminder" in d.subject and d.status == "pending"]
        assert reminders_left == [], "a reminder queued in the instant of its withdrawal is not sent"
        overdue = [d for d in deliveries if "OVERDUE" in d.subject]
        assert overdue == []
        still_held = session.get(Delivery, held_id)
        assert still_held is not None and (still_held.status, still_held.leased_by) == ("pending", "sender-1")
        notices = [d for d in deliveries if "SAE withdrawn" in d.subject]
        per_alert = Counter(d.alert_id for d in notices)
        assert len(per_alert) == ALERTS and set(per_alert.values()) == {2}, "each paged officer told once"
        assert len({d.id for d in deliveries}) == len(deliveries)
    assert verify_chain(engine, service="notify")[1] == []
    engine.dispose()
