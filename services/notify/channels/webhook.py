"""Chat webhook channel: Slack- or Teams-compatible JSON, signed with Standard Webhooks, POSTed with httpx.

A receiver that answers anything but 2xx, or cannot be reached, is a DeliveryError: the dispatcher
retries with backoff and, after the last attempt, escalates to the next tier.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from services.notify.channels import DeliveryError, OutgoingMessage
from services.notify.escalation import WEBHOOK_PREFIX
from shared.clock import Clock
from shared.webhook_signatures import WebhookSecret, signature_headers

ChatFormat = Literal["slack", "teams"]
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: WebhookSecret
    format: ChatFormat


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chat_payload(fmt: ChatFormat, *, subject: str, text: str) -> dict[str, Any]:
    """Slack incoming-webhook JSON, or a Teams (Workflows) message carrying an Adaptive Card."""
    if fmt == "slack":
        return {"text": f"*{_slack_escape(subject)}*\n{_slack_escape(text)}"}
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": subject, "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "TextBlock", "text": text, "wrap": True},
        ],
    }
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }


class WebhookChannel:
    def __init__(
        self,
        targets: Mapping[str, WebhookTarget],
        *,
        clock: Clock,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._targets = dict(targets)
        self._clock = clock
        self._timeout = timeout
        self._transport = transport

    async def deliver(self, message: OutgoingMessage) -> None:
        name = message.recipient.removeprefix(WEBHOOK_PREFIX)
        target = self._targets.get(name)
        if target is None:
            raise DeliveryError(f"no chat webhook named '{name}' is configured (SENTINEL_CHAT_WEBHOOKS)")
        body = json.dumps(
            chat_payload(target.format, subject=message.subject, text=message.text), separators=(",", ":")
        ).encode()
        headers = {
            "content-type": "application/json",
            **signature_headers(target.secret, message.delivery_id, int(self._clock.now().timestamp()), body),
        }
        try:
            async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
                response = await client.post(target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook '{name}': {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise DeliveryError(f"webhook '{name}' answered HTTP {response.status_code}: {response.text[:200]}")
