"""Safety and notify together for one infused subject (A-1, arm A, infused at 09:00 on day 0): the signals safety
raises for its events, applied to notify in the order a test gives (the vitals and lab withdrawal reviews)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from services.notify.models import Delivery
from services.notify.signals import apply_signal
from shared.db import make_engine
from shared.events import EnvelopeBase, VitalsRecorded
from shared.protocol import Protocol
from tests.unit.notify.conftest import Notifier
from tests.unit.safety.clinical import Driver, dose, vitals
from tests.unit.safety.test_clinical_rules import at, subject_in

OFFICER = "safety.officer@sentinel.example"
START = at(0, 9)
"""A-1's infusion starts at 09:00 on day 0."""


@pytest.fixture
def safety(tmp_path: Path, protocol: Protocol) -> Driver:
    """A-1, enrolled in arm A and infused at 09:00 on day 0; no screening count on file."""
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/safety.db"), protocol)
    subject_in(driver, "A-1", "A", visit=False)
    driver.apply(dose("A-1", START))
    return driver


def vs(vitals_id: str, measured: datetime, *, tag: str = "", received: int = 5, **signs: str) -> VitalsRecorded:
    """A vitals set of A-1, received `received` minutes after it was measured; `tag`: another delivery (a correction
    re-sends the same vitals id)."""
    envelope = vitals("A-1", measured, vitals_id=vitals_id, **signs)
    return envelope.model_copy(
        update={"id": f"{envelope.id}{tag}", "receivedat": measured + timedelta(minutes=received)}
    )


def findings(out: list[EnvelopeBase]) -> list[Any]:
    """What safety raised that notify's lab threads take: findings and their withdrawals."""
    return [s for s in out if getattr(s, "type", None) in ("lab.toxicity", "lab.toxicity_withdrawn")]


def send(notifier: Notifier, signals: list[Any], *, live: bool = True) -> None:
    for signal in signals:
        with Session(notifier.engine) as session, session.begin():
            apply_signal(session, signal, notifier.clock.now(), protocol=notifier.protocol, live=live)


def hand_over(notifier: Notifier) -> None:
    """The mail server took every page queued so far."""
    with Session(notifier.engine) as session, session.begin():
        for row in session.exec(select(Delivery)).all():
            if row.status == "pending":
                row.status = "sent"


def to_officer(notifier: Notifier) -> list[Delivery]:
    return sorted((d for d in notifier.deliveries() if d.recipient == OFFICER), key=lambda d: d.created_at)
