"""Ingest configuration (SENTINEL_* environment variables)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.settings import CommonSettings
from shared.webhook_signatures import WebhookSecret


class IngestSettings(CommonSettings):
    ingest_port: int = 8000
    webhook_secrets: dict[str, str] = Field(
        default_factory=dict, description="JSON object: source_id -> 'whsec_...' secret"
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    signature_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    publish_timeout_seconds: float = Field(default=15.0, gt=0)
    retry_after_seconds: int = Field(default=30, ge=1)

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_parse(cls, secrets: dict[str, str]) -> dict[str, str]:
        for source_id, secret in secrets.items():
            try:
                WebhookSecret.parse(secret)
            except ValueError as exc:
                raise ValueError(f"webhook secret for source '{source_id}': {exc}") from exc
        return secrets

    def parsed_secrets(self) -> dict[str, WebhookSecret]:
        return {source: WebhookSecret.parse(secret) for source, secret in self.webhook_secrets.items()}
