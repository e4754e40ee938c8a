"""Notify on real parts: signals from Kafka become one alert and one mail per recipient over real SMTP;
two dispatchers sharing one database (SQLite or PostgreSQL) never send a delivery twice."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.devstack.mail_catcher import MailCatcher
from services.notify import models
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.main import create_app
from services.notify.models import Alert, Delivery
from services.notify.settings import NotifySettings
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import SaeDetected, message_key
from tests.kafka_tools import publish_sync
from tests.polling import wait_for
from tests.signal_factories import RecordingChannel, sae_detected

pytestmark = pytest.mark.integration
TOKEN = "officer-token-" + uuid.uuid4().hex
AWARE = datetime(2026, 11, 25, 22, 15, tzinfo=UTC)


def sae_signal() -> SaeDetected:
    return sae_detected(
        "101-003", aware=AWARE, ae_id="AE-7", onset="2026-11-25", received_at=AWARE + timedelta(minutes=5)
    )


def test_signal_becomes_one_alert_and_one_mail_per_recipient(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    signals = f"{topic_prefix}.signals"
    signal = sae_signal().model_dump_json().encode()
    publish_sync(kafka_bootstrap, signals, [(message_key("NCT07212335", "101-003"), signal)] * 2)
    with MailCatcher(tmp_path / "mail", port=0) as catcher:
        settings = NotifySettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            signals_topic=signals,
            clinical_topic=f"{topic_prefix}.clinical",
            var_dir=tmp_path,
            notify_group_id=f"notify-{uuid.uuid4().hex[:8]}",
            smtp_port=catcher.port,
            api_tokens={TOKEN: {"user": "dr.officer", "role": "officer"}},
        )
        with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
            mails = wait_for(lambda: len(catcher.messages()) >= 2 and catcher.messages(), what="two SAE mails")
            auth = {"authorization": f"Bearer {TOKEN}"}
            alerts = wait_for(lambda: client.get("/v1/alerts", headers=auth).json(), what="alert listed")
            metrics = wait_for(
                lambda: (
                    'sentinel_notify_events_processed_total{outcome="duplicate"} 1.0' in client.get("/metrics").text
                ),
                what="the second delivery of the signal seen as a duplicate",
            )
            assert metrics
            detail = client.get(f"/v1/alerts/{alerts[0]['id']}", headers=auth).json()
    assert len(catcher.messages()) == 2, "a re-delivered signal must not mail again"
    assert sorted(str(m["To"]) for m in mails) == [
        "medical.monitor@sentinel.example",
        "safety.officer@sentinel.example",
    ]
    mail: EmailMessage = mails[0]
    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    body = text.get_content()
    for expected in ("NCT07212335", "101-003", "Cytokine release syndrome", "hospitalization", "2026-11-26 22:15 UTC"):
        assert expected in body
    assert "2026-11-26 22:15 UTC" in str(mail["Subject"])
    assert len(alerts) == 1
    assert alerts[0]["obligations"][0]["due_at"] == "2026-11-26T22:15:00Z"
    assert [d["status"] for d in detail["deliveries"]] == ["sent", "sent"]
    assert [h["action"] for h in detail["history"]].count("delivered") == 2


def test_two_dispatchers_never_send_the_same_delivery_twice(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, models.TABLES)
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        session.add(
            Alert(
                id="a1",
                thread_key="t",
                kind="sae",
                trial_id="T",
                site_id="s",
                subject_id="x",
                title="t",
                details={},
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        for i in range(120):
            session.add(
                Delivery(
                    id=f"d{i:03d}",
                    alert_id="a1",
                    channel="email",
                    recipient=f"r{i}@x.example",
                    subject="s",
                    body_text="t",
                    body_html="<p>t</p>",
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    channel = RecordingChannel()
    clock = FakeClock(now)

    def dispatcher() -> DeliveryDispatcher:
        return DeliveryDispatcher(
            engine=engine,
            channel=channel,
            clock=clock,
            metrics=DeliveryMetrics.create(CollectorRegistry()),
            max_attempts=3,
            base_backoff_seconds=1,
        )

    first, second = dispatcher(), dispatcher()

    async def drain() -> None:
        while sum(await asyncio.gather(first.dispatch_due(limit=7), second.dispatch_due(limit=7))):
            pass

    asyncio.run(drain())
    counts = Counter(channel.sent)
    assert len(counts) == 120
    assert max(counts.values()) == 1, [d for d, n in counts.items() if n > 1]
    with Session(engine) as session:
        assert {d.status for d in session.exec(select(Delivery)).all()} == {"sent"}
    engine.dispose()
