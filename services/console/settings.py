"""Console configuration (SENTINEL_* environment variables)."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import ApiSettings

PLACEHOLDERS = {"changeme", "secret", "console-secret", "please-change"}


class OidcSettings(BaseSettings):
    """Single sign-on (OpenID Connect, authorization code flow). Off unless an issuer is configured.

    The APIs keep their own bearer tokens and roles: an OIDC identity (its e-mail, or `sub`) maps to an API user
    name in `oidc_users`, and the console acts with that user's token, so roles and the audit trail stay the API's.
    """

    model_config = SettingsConfigDict(env_prefix="SENTINEL_OIDC_", extra="ignore")

    issuer: str | None = Field(default=None, pattern=r"^https?://", description="Discovery at <issuer>/.well-known/")
    client_id: str | None = None
    client_secret: str | None = None
    scope: str = "openid email profile"
    authorization_endpoint: str | None = Field(default=None, description="Overrides discovery")
    token_endpoint: str | None = Field(default=None, description="Overrides discovery")
    userinfo_endpoint: str | None = Field(default=None, description="Overrides discovery")
    users: dict[str, str] = Field(default_factory=dict, description="e-mail or sub -> API user name")

    @property
    def enabled(self) -> bool:
        return bool(self.issuer and self.client_id)


class ConsoleSettings(ApiSettings):
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore")

    console_port: int = 8003
    host: str = "127.0.0.1"
    log_level: str = "info"
    protocol_path: str | None = Field(default=None, description="The trial's protocol YAML (its id and DLT rules)")
    notify_api_url: str = Field(default="http://127.0.0.1:8002", pattern=r"^https?://")
    safety_api_url: str = Field(default="http://127.0.0.1:8001", pattern=r"^https?://")
    console_url: str | None = Field(
        default=None, pattern=r"^https?://", description="The public address (mails link here); https => Secure cookie"
    )
    console_secret: str = Field(
        default_factory=lambda: secrets.token_urlsafe(32),
        description="Signs session cookies; default: random per start (everyone signs in again after a restart)",
    )
    session_idle_minutes: int = Field(default=60, ge=1, le=24 * 60)
    session_max_hours: int = Field(default=12, ge=1, le=24 * 7)
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: Secure when the request or SENTINEL_CONSOLE_URL is https (behind TLS)"
    )
    api_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("console_secret")
    @classmethod
    def _real_secret(cls, secret: str) -> str:
        if len(secret) < 32 or secret.lower() in PLACEHOLDERS:
            raise ValueError("SENTINEL_CONSOLE_SECRET must be at least 32 characters of real randomness")
        return secret
