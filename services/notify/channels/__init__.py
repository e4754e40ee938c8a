"""Delivery channels behind one small interface: hand one message to one recipient, or raise DeliveryError.

The dispatcher owns durability, leases and retries; a channel only speaks its protocol (SMTP, HTTPS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class DeliveryError(Exception):
    """The channel could not hand the message over; the dispatcher retries with backoff."""


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: str
    recipient: str  # an e-mail address, or webhook:<name>
    subject: str
    text: str
    html: str


class DeliveryChannel(Protocol):
    async def deliver(self, message: OutgoingMessage) -> None: ...
