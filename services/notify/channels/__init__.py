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
    """One message to one recipient. `delivery_id` is stable across retries (a digest's derives from the
    notices it carries), so a duplicate after a crash carries the same Message-ID / webhook-id and the
    receiving client merges it."""

    delivery_id: str
    recipient: str  # an e-mail address, or webhook:<name>
    subject: str
    text: str
    html: str
    attempt: int = 1
    after_interruption: bool = False  # an earlier attempt was handed over but never recorded: may be a duplicate
    digest_of: tuple[str, ...] = ()  # the deliveries a digest carries


class DeliveryChannel(Protocol):
    async def deliver(self, message: OutgoingMessage) -> None: ...
