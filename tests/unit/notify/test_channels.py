"""Channels: signed Slack/Teams webhooks, SMTP outages, and what happens when a delivery fails for good."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from services.notify import models
from services.notify.channels import DeliveryError, OutgoingMessage
from services.notify.channels.webhook import WebhookChannel, WebhookTarget, chat_payload
from services.notify.models import Delivery
from shared.clock import FakeClock
from shared.db import create_tables
from shared.protocol import Protocol, parse_protocol
from shared.webhook_signatures import WebhookSecret, verify
from tests.unit.conftest import START
from tests.unit.notify.conftest import Notifier, act

SECRET = "whsec_" + "c2VudGluZWwtdGVzdC1zZWNyZXQtMzItYnl0ZXMhIQ=="
SO = "safety.officer@sentinel.example"
MM = "medical.monitor@sentinel.example"
PI = "principal.investigator@sentinel.example"


class Receiver:
    """A chat service stand-in: answers with the queued statuses, then 200; records what it got."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200, text="ok")


def channel(receiver: Receiver, clock: FakeClock, fmt: str = "slack") -> WebhookChannel:
    target = WebhookTarget(url="https://chat.example/hook", secret=WebhookSecret.parse(SECRET), format=fmt)  # type: ignore[arg-type]
    return WebhookChannel({"safety-chat": target}, clock=clock, transport=httpx.MockTransport(receiver))


MESSAGE = OutgoingMessage(
    delivery_id="d-1", recipient="webhook:safety-chat", subject="SAE <due>", text="Subject S-001 & more", html=""
)


async def test_webhook_is_signed_with_standard_webhooks(clock: FakeClock) -> None:
    receiver = Receiver()
    await channel(receiver, clock).deliver(MESSAGE)
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/json"
    verify(
        WebhookSecret.parse(SECRET),
        msg_id=request.headers["webhook-id"],
        timestamp=request.headers["webhook-timestamp"],
        signature_header=request.headers["webhook-signature"],
        body=request.content,
        now=clock.now(),
    )
    assert request.headers["webhook-id"] == "d-1"
    assert json.loads(request.content) == {"text": "*SAE &lt;due&gt;*\nSubject S-001 &amp; more"}


def test_teams_payload_is_an_adaptive_card() -> None:
    payload = chat_payload("teams", subject="SAE", text="body")
    [attachment] = payload["attachments"]
    assert payload["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert [b["text"] for b in attachment["content"]["body"]] == ["SAE", "body"]


@pytest.mark.parametrize("status", [500, 404])
async def test_webhook_error_status_is_a_delivery_error(clock: FakeClock, status: int) -> None:
    with pytest.raises(DeliveryError, match=f"HTTP {status}"):
        await channel(Receiver(status), clock).deliver(MESSAGE)


async def test_unreachable_or_unknown_webhook_is_a_delivery_error(clock: FakeClock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    target = WebhookTarget(url="https://chat.example/hook", secret=WebhookSecret.parse(SECRET), format="slack")
    unreachable = WebhookChannel({"safety-chat": target}, clock=clock, transport=httpx.MockTransport(refuse))
    with pytest.raises(DeliveryError, match="ConnectError"):
        await unreachable.deliver(MESSAGE)
    with pytest.raises(DeliveryError, match="no chat webhook named 'other'"):
        await unreachable.deliver(OutgoingMessage("d", "webhook:other", "s", "t", ""))


@pytest.fixture
def chat_protocol(protocol: Protocol) -> Protocol:
    data = protocol.model_dump(mode="json")
    data["escalation"]["steps"][0]["targets"] = ["safety_officer", "webhook:safety-chat"]
    return parse_protocol(yaml.safe_dump(data))


async def test_webhook_500_then_200_is_delivered_once(
    engine: Engine, chat_protocol: Protocol, clock: FakeClock, make_sae: Any
) -> None:
    create_tables(engine, models.TABLES)
    receiver = Receiver(500)
    notifier = Notifier(engine=engine, protocol=chat_protocol, clock=clock, webhook=channel(receiver, clock))
    notifier.apply(make_sae())
    await notifier.at(START)
    [hook] = [d for d in notifier.deliveries() if d.channel == "webhook"]
    assert (hook.status, hook.attempts, hook.recipient) == ("pending", 1, "webhook:safety-chat")
    assert "HTTP 500" in (hook.last_error or "")
    await notifier.at(START + timedelta(minutes=1))
    [hook] = [d for d in notifier.deliveries() if d.channel == "webhook"]
    assert (hook.status, hook.attempts) == ("sent", 2)
    assert len(receiver.requests) == 2
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]
    await notifier.at(START + timedelta(minutes=20))
    assert len(receiver.requests) == 2, "delivered once"
    sample = notifier.registry.get_sample_value
    assert sample("sentinel_notify_deliveries_total", {"channel": "webhook", "outcome": "retry"}) == 1
    assert sample("sentinel_notify_deliveries_total", {"channel": "webhook", "outcome": "sent"}) == 1
    assert [h.action for h in notifier.history()].count("delivery_retry") == 1


async def test_smtp_down_then_back_delivers_each_mail_once(notifier: Notifier, make_sae: Any) -> None:
    notifier.channel.failures = 2  # both first attempts meet a dead SMTP server
    notifier.apply(make_sae())
    assert await notifier.at(START) == []
    sent = await notifier.at(START + timedelta(minutes=1))
    assert sorted(r for r, _ in sent) == [MM, SO]
    assert await notifier.at(START + timedelta(minutes=5)) == []
    assert all(d.status == "sent" and d.attempts == 2 for d in notifier.deliveries())


async def test_a_delivery_that_fails_for_good_escalates_to_the_next_tier(
    engine: Engine, chat_protocol: Protocol, clock: FakeClock, make_sae: Any
) -> None:
    create_tables(engine, models.TABLES)
    receiver = Receiver(*([503] * 10))
    notifier = Notifier(engine=engine, protocol=chat_protocol, clock=clock, webhook=channel(receiver, clock))
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")  # even acknowledged: a page that reached nobody is handed on
    await notifier.at(START)
    await notifier.at(START + timedelta(seconds=30))
    sent = await notifier.at(START + timedelta(minutes=2))
    [hook] = [d for d in notifier.deliveries() if d.channel == "webhook"]
    assert (hook.status, hook.attempts) == ("failed", 3)
    assert [(r, "Could not reach" in s) for r, s in sent] == [(MM, True)], "tier 2 (medical monitor) is paged"
    actions = [h.action for h in notifier.history()]
    assert "delivery_failed" in actions and "failover" in actions
    failed = notifier.registry.get_sample_value(
        "sentinel_notify_deliveries_total", {"channel": "webhook", "outcome": "failed"}
    )
    assert failed == 1


async def test_failover_with_no_tier_left_is_recorded(notifier: Notifier, make_sae: Any) -> None:
    notifier.channel.failures = 100
    notifier.apply(make_sae())
    for minutes in range(0, 400, 5):
        await notifier.at(START + timedelta(minutes=minutes))
    assert "failover_exhausted" in [h.action for h in notifier.history()]
    assert {d.status for d in notifier.rows(Delivery)} == {"failed"}
