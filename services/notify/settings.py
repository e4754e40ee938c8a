"""Notify configuration (SENTINEL_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ApiSettings, CommonSettings


class NotifySettings(CommonSettings, ApiSettings):
    notify_port: int = 8002
    notify_group_id: str = "sentinel-notify"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_from: str = "Safety Sentinel <sentinel@localhost>"
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    delivery_max_attempts: int = Field(default=6, ge=1, le=50)
    delivery_base_backoff_seconds: float = Field(default=5.0, gt=0)
    dispatch_poll_seconds: float = Field(default=1.0, gt=0)
