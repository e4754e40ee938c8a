"""A real local HTTP receiver: the signed chat webhook answered 500 first, then 200, is delivered once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.notify import models
from services.notify.channels.webhook import WebhookChannel, WebhookTarget
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.models import Delivery
from services.notify.signals import apply_signal
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.protocol import load_protocol, parse_protocol
from shared.webhook_signatures import WebhookSecret, verify
from tests.integration.test_notify_timers_postgres import sae

pytestmark = pytest.mark.integration
SECRET = WebhookSecret.parse("whsec_" + "c2VudGluZWwtdGVzdC1zZWNyZXQtMzItYnl0ZXMhIQ==")


class Receiver(BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(Receiver.statuses.pop(0) if Receiver.statuses else 200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.statuses = [500]
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


class NoMail:
    sender = "sentinel@test"

    async def send(self, message: object) -> None:
        return None


def test_webhook_500_then_200_is_delivered_once(receiver: str, tmp_path: Path) -> None:
    data = load_protocol(None).model_dump(mode="json")
    data["escalation"]["steps"][0]["targets"] = ["safety_officer", "webhook:safety-chat"]
    protocol = parse_protocol(yaml.safe_dump(data))
    engine = make_engine(f"sqlite:///{tmp_path}/notify.db")
    create_tables(engine, models.TABLES)
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        apply_signal(session, sae(1), start, protocol=protocol)
    clock = FakeClock(start)
    webhook = WebhookChannel(
        {"safety-chat": WebhookTarget(url=receiver, secret=SECRET, format="teams")}, clock=clock, timeout=5
    )
    dispatcher = DeliveryDispatcher(
        engine=engine,
        channel=NoMail(),
        webhook=webhook,
        clock=clock,
        metrics=DeliveryMetrics.create(CollectorRegistry()),
        max_attempts=3,
        base_backoff_seconds=1,
    )

    async def run() -> None:
        await dispatcher.dispatch_due()
        clock.advance(timedelta(seconds=5))
        await dispatcher.dispatch_due()
        clock.advance(timedelta(minutes=5))
        await dispatcher.dispatch_due()

    asyncio.run(run())
    assert len(Receiver.received) == 2
    headers, body = Receiver.received[-1]
    verify(
        SECRET,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
        signature_header=headers["webhook-signature"],
        body=body,
        now=clock.now(),
    )
    assert b"AdaptiveCard" in body
    with Session(engine) as session:
        [hook] = [d for d in session.exec(select(Delivery)).all() if d.channel == "webhook"]
        assert (hook.status, hook.attempts) == ("sent", 2)
    engine.dispose()
