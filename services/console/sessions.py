"""Pure: the console's session cookie, signed with HMAC-SHA256 and checked for idle and absolute expiry.

The cookie names the user and the SHA-256 of their API token, never the token itself; the console finds the
token again in its configuration, so revoking a token in SENTINEL_API_TOKENS ends every session made with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.settings import Role


@dataclass(frozen=True)
class ConsoleSession:
    user: str
    role: Role
    token_sha256: str
    csrf: str
    issued_at: datetime
    seen_at: datetime
    via: str = "token"

    def touched(self, now: datetime) -> ConsoleSession:
        return replace(self, seen_at=now)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(*, user: str, role: Role, token: str, now: datetime, via: str = "token") -> ConsoleSession:
    return ConsoleSession(user, role, token_digest(token), secrets.token_urlsafe(32), now, now, via)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), f"{purpose}:{body}".encode(), hashlib.sha256).digest())


def sign(secret: str, purpose: str, payload: dict[str, object]) -> str:
    """A value a browser may hold but not forge; `purpose` keeps one kind of cookie from passing as another."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(secret, purpose, body)}"


def unsign(secret: str, purpose: str, value: str | None) -> dict[str, object] | None:
    if not value or "." not in value:
        return None
    body, _, mac = value.rpartition(".")
    if not hmac.compare_digest(mac, _mac(secret, purpose, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def encode_session(secret: str, session: ConsoleSession) -> str:
    return sign(
        secret,
        "session",
        {
            "u": session.user,
            "r": session.role,
            "t": session.token_sha256,
            "c": session.csrf,
            "i": session.issued_at.timestamp(),
            "s": session.seen_at.timestamp(),
            "v": session.via,
        },
    )


def decode_session(
    secret: str, value: str | None, *, now: datetime, idle: timedelta, max_age: timedelta
) -> ConsoleSession | None:
    """The session, or None when the cookie is missing, forged, idle too long or too old."""
    payload = unsign(secret, "session", value)
    if payload is None:
        return None
    try:
        issued = datetime.fromtimestamp(float(str(payload["i"])), tz=now.tzinfo)
        seen = datetime.fromtimestamp(float(str(payload["s"])), tz=now.tzinfo)
        role = str(payload["r"])
        if role not in ("viewer", "officer", "admin"):
            return None
        session = ConsoleSession(
            user=str(payload["u"]),
            role=role,  # type: ignore[arg-type]  # checked just above
            token_sha256=str(payload["t"]),
            csrf=str(payload["c"]),
            issued_at=issued,
            seen_at=seen,
            via=str(payload.get("v", "token")),
        )
    except (KeyError, ValueError, OverflowError):
        return None
    if now - session.seen_at > idle or now - session.issued_at > max_age or session.issued_at > now + idle:
        return None
    return session
