"""Standard Webhooks signatures (https://www.standardwebhooks.com/): HMAC-SHA256 over `id.timestamp.body`.

Used to verify what EDC systems post to ingest and to sign what notify posts to chat webhooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = timedelta(minutes=5)
MAX_TIMESTAMP_DIGITS = 12
"""Seconds since the epoch fit in 11 digits until the year 5138; anything longer is refused unread."""


class SignatureError(Exception):
    """The request is not provably from the configured sender; the message says why (never the secret)."""


@dataclass(frozen=True)
class WebhookSecret:
    key: bytes = field(repr=False)  # never in a log line or an error message

    @classmethod
    def parse(cls, secret: str) -> WebhookSecret:
        raw = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError as exc:
            raise ValueError("webhook secret must be 'whsec_' followed by base64") from exc
        if len(key) < 16:
            raise ValueError("webhook secret is too short: use at least 16 random bytes")
        return cls(key)


def sign(secret: WebhookSecret, msg_id: str, timestamp: int | str, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: WebhookSecret, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: WebhookSecret,
    *,
    msg_id: str | None,
    timestamp: str | None,
    signature_header: str | None,
    body: bytes,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Raise SignatureError unless one of the `v1,` signatures matches and the timestamp is fresh.

    The header may carry several space-separated signatures (key rotation); any valid one is enough.
    """
    if not msg_id or not timestamp or not signature_header:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    # checked as text first: a huge number would overflow the float arithmetic below (a 500, not a 401)
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
        raise SignatureError("webhook-timestamp must be integer seconds since the epoch")
    age = now.timestamp() - int(timestamp)
    if abs(age) > tolerance.total_seconds():
        window = int(tolerance.total_seconds())
        raise SignatureError(f"webhook-timestamp is outside the replay window of {window} seconds")
    expected = sign(secret, msg_id, timestamp, body).encode()
    for candidate in signature_header.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return
    raise SignatureError("no webhook-signature matches the body")
