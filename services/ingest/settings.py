"""Ingest configuration (SENTINEL_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from shared.settings import CommonSettings
from shared.webhook_signatures import WebhookSecret


class IngestSettings(CommonSettings):
    ingest_port: int = 8000
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="JSON object: source_id -> 'whsec_...' secret (canonical sources)"
    )
    sources_path: Path | None = Field(default=None, description="Sources file (YAML): EDC adapters and their maps")
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    signature_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    publish_timeout_seconds: float = Field(default=15.0, gt=0)
    retry_after_seconds: int = Field(default=30, ge=1)
    publish_batch_size: int = Field(default=1000, ge=1, le=100_000)
    publish_concurrency: int = Field(default=1000, ge=1, le=10_000)
    producer_batch_bytes: int = Field(
        default=512 * 1024, ge=16 * 1024, le=1024 * 1024, description="Kafka batch per partition (broker max 1 MiB)"
    )
    delivery_retention_days: int = Field(default=7, ge=4, description="Delivery ids are kept at least this long")
    purge_interval_seconds: float = Field(default=3600, gt=0)
    redcap_poll_seconds: float = Field(default=5.0, gt=0)
    background_jobs: bool = Field(default=True, description="Run the purge and REDCap jobs (tests drive them)")
    sqlite_checkpoint_pages: int = Field(
        default=10_000,
        ge=1_000,
        description="SQLite only: WAL pages (4 KiB) before a commit copies them into the database file (SQLite's"
        " default, 1,000, made nearly every commit of 100-event posts a checkpoint too; a commit is durable in the"
        " WAL either way)",
    )

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_parse(cls, secrets: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """The error names the source, never a secret (settings also hide the input: `hide_input_in_errors`)."""
        for source_id, secret in secrets.items():
            try:
                WebhookSecret.parse(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"webhook secret for source '{source_id}': {exc}") from None
        return secrets
