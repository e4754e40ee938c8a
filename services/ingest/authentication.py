"""Who may post: each source proves itself with its scheme, always over the raw bytes, before anything is parsed.

- Standard Webhooks: `webhook-id`/`webhook-timestamp`/`webhook-signature`, with a replay window.
- GitHub style: `X-Hub-Signature-256: sha256=<hex HMAC of the body>`; no timestamp is signed, so replays are
  stopped by the delivery-id and record-version idempotency instead.
- Bearer token, for senders that cannot compute an HMAC (REDCap's Data Entry Trigger can only call a URL, so
  there the token may come as the `token` query parameter).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta

from services.ingest.sources import AuthScheme, Credential
from shared.webhook_signatures import SignatureError, verify

GITHUB_HEADER = "x-hub-signature-256"


def verify_github(secret: str, *, signature_header: str | None, body: bytes) -> None:
    if not signature_header:
        raise SignatureError("missing X-Hub-Signature-256 header")
    if not signature_header.startswith("sha256="):
        raise SignatureError("X-Hub-Signature-256 must be 'sha256=' followed by the hex digest")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature_header.strip().lower().encode(), expected.encode()):
        raise SignatureError("X-Hub-Signature-256 does not match the body")


def verify_bearer(token: str, *, authorization: str | None, query_token: str | None) -> None:
    presented = None
    if authorization and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    elif query_token:
        presented = query_token
    if not presented:
        raise SignatureError("missing bearer token (Authorization: Bearer ... or ?token=)")
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise SignatureError("the bearer token is not valid for this source")


def authenticate(
    credential: Credential,
    *,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes,
    now: datetime,
    tolerance: timedelta,
) -> None:
    """Raise SignatureError unless the request is provably from this source."""
    if credential.scheme == AuthScheme.GITHUB:
        verify_github(credential.value.get_secret_value(), signature_header=headers.get(GITHUB_HEADER), body=body)
    elif credential.scheme == AuthScheme.BEARER:
        verify_bearer(
            credential.value.get_secret_value(),
            authorization=headers.get("authorization"),
            query_token=query.get("token"),
        )
    else:
        assert credential.webhook_secret is not None
        verify(
            credential.webhook_secret,
            msg_id=headers.get("webhook-id"),
            timestamp=headers.get("webhook-timestamp"),
            signature_header=headers.get("webhook-signature"),
            body=body,
            now=now,
            tolerance=tolerance,
        )
