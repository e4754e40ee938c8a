"""Notify configuration (SENTINEL_* environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from services.notify.channels.webhook import WebhookTarget
from shared.settings import ApiSettings, CommonSettings
from shared.webhook_signatures import WebhookSecret


class ChatWebhook(BaseModel):
    """A chat channel notify posts to: Slack- or Teams-compatible JSON, signed with the secret."""

    url: str = Field(pattern=r"^https?://", max_length=2000)
    secret: SecretStr
    format: Literal["slack", "teams"] = "slack"

    @field_validator("secret")
    @classmethod
    def _real_secret(cls, secret: SecretStr) -> SecretStr:
        WebhookSecret.parse(
            secret.get_secret_value()
        )  # refuses placeholders and short keys at start, not at the first page
        return secret


class NotifySettings(CommonSettings, ApiSettings):
    notify_port: int = 8002
    notify_group_id: str = "sentinel-notify"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_from: str = "Safety Sentinel <sentinel@localhost>"
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    delivery_max_attempts: int = Field(default=6, ge=1, le=50)
    delivery_base_backoff_seconds: float = Field(default=5.0, gt=0)
    dispatch_poll_seconds: float = Field(default=1.0, gt=0)
    dispatch_concurrency: int = Field(default=4, ge=1, le=64, description="Messages handed over at the same time")
    dispatch_batch_size: int = Field(default=50, ge=1, le=1000, description="Deliveries claimed per round")
    digest_window_seconds: int = Field(
        default=300, ge=0, le=86_400, description="Low-urgency notices wait this long and leave as one digest"
    )
    notify_failpoint: Literal["none", "crash_after_handoff"] = Field(
        default="none", description="Fault tests only: SIGKILL right after a mail is handed over, before it is recorded"
    )
    delivery_lease_seconds: int = Field(
        default=15, ge=3, le=3600, description="A crashed sender's deliveries are retaken after this long"
    )
    timer_poll_seconds: float = Field(default=1.0, gt=0)
    timer_late_after_seconds: int = Field(
        default=60, ge=1, description="A timer firing this much after its due time is marked late in the history"
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    console_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=500,
        description="SENTINEL_CONSOLE_URL: the console's public address; every mail links to its alert's page there",
    )
    chat_webhooks: dict[str, ChatWebhook] = Field(
        default_factory=dict,
        description="SENTINEL_CHAT_WEBHOOKS: name -> {url, secret, format}; protocol targets say webhook:<name>",
    )

    def webhook_targets(self) -> dict[str, WebhookTarget]:
        return {
            name: WebhookTarget(
                url=hook.url, secret=WebhookSecret.parse(hook.secret.get_secret_value()), format=hook.format
            )
            for name, hook in self.chat_webhooks.items()
        }
