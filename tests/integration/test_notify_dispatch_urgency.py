"""Issue 15, defect 5 on real parts: after an SMTP outage the SAE pages reach the real (aiosmtpd) SMTP
server before the backlog, the backlog arrives as one digest per recipient, and every mail's Message-ID is
the stable one of its delivery. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.devstack.mail_catcher import MailCatcher
from services.notify import models
from services.notify.channels.email import SmtpChannel, SmtpConfig, stable_message_id
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.models import Delivery
from services.notify.signals import apply_signal
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import AssessmentMissed, AssessmentMissedData
from shared.protocol import load_protocol
from tests.signal_factories import sae_detected

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SENDER = "Safety Sentinel <sentinel@sentinel.example>"


def missed(n: int) -> AssessmentMissed:
    return AssessmentMissed(
        id=f"sig-miss-{n}",
        source="/services/safety",
        subject=f"101-{n:03d}",
        time=NOW,
        trialid="NCT07212335",
        data=AssessmentMissedData(
            site_id="101",
            subject_id=f"101-{n:03d}",
            assessment="day 14",
            due_from=NOW - timedelta(days=3),
            due_until=NOW - timedelta(days=1),
            missing=["lab"],
        ),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_after_an_smtp_outage_pages_arrive_first_and_bulk_as_digests(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    create_tables(engine, models.TABLES)
    protocol = load_protocol(None)
    clock = FakeClock(NOW)
    with Session(engine) as session, session.begin():
        for n in range(60):
            apply_signal(session, missed(n), NOW, protocol=protocol)
    port = free_port()
    dispatcher = DeliveryDispatcher(
        engine=engine,
        channel=SmtpChannel(SmtpConfig(host="127.0.0.1", port=port, sender=SENDER, timeout=5)),
        clock=clock,
        metrics=DeliveryMetrics.create(CollectorRegistry()),
        max_attempts=10,
        base_backoff_seconds=5,
        concurrency=2,
        batch_size=2,
    )

    async def drain() -> None:
        while await dispatcher.dispatch_due():
            pass

    clock.advance(timedelta(minutes=6))
    asyncio.run(drain())  # nothing listens: every digest attempt fails and is retried later
    with Session(engine) as session:
        assert {(d.status, d.attempts) for d in session.exec(select(Delivery)).all()} == {("pending", 1)}
        sae = sae_detected("101-900", aware=clock.now(), ae_id="AE-9")
        apply_signal(session, sae, clock.now(), protocol=protocol)
        session.commit()
    clock.advance(timedelta(hours=1))
    with MailCatcher(tmp_path / "mail", port=port) as catcher:
        asyncio.run(drain())
        mails = catcher.messages()
    engine.dispose()
    subjects = [str(m["Subject"]) for m in mails]
    assert len(mails) == 4, subjects
    assert all("SAE report due" in s for s in subjects[:2]), subjects
    assert all(s.startswith("Digest: 60 notices") for s in subjects[2:]), subjects
    assert sorted(str(m["To"]) for m in mails[2:]) == [
        "medical.monitor@sentinel.example",
        "safety.officer@sentinel.example",
    ]
    for mail in mails:
        assert mail["Message-ID"] == stable_message_id(str(mail["X-Sentinel-Delivery"]), SENDER)
    digest = mails[2].get_body(preferencelist=("plain",))
    assert digest is not None
    assert all(f"subject 101-{n:03d}" in digest.get_content() for n in range(60))
    assert mails[2]["X-Sentinel-Attempt"] == "2"
