"""Configuration from `SENTINEL_*` environment variables, built once in each service's composition root."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import topics
from shared.audit import AuditKey

Role = Literal["viewer", "officer", "admin"]


class ApiUser(BaseModel):
    user: str
    role: Role


class CommonSettings(BaseSettings):
    """What every service needs: broker, database, topics, protocol."""

    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite file var/<service>.db")
    var_dir: Path = Path("var")
    clinical_topic: str = topics.CLINICAL
    signals_topic: str = topics.SIGNALS
    protocol_path: Path | None = Field(default=None, description="Protocol YAML; default: the shipped example")
    auto_migrate: bool = Field(
        default=True,
        description="Upgrade the schema at start (embedded default); false: refuse a schema that is behind",
    )
    host: str = "127.0.0.1"
    log_level: str = "info"
    environment: Literal["development", "production"] = Field(
        default="development", description="production: refuses a missing or placeholder SENTINEL_AUDIT_KEY"
    )
    audit_key: SecretStr | None = Field(
        default=None, description="HMAC key of the audit chain and its checkpoints; the database never holds it"
    )
    audit_checkpoint_dir: Path | None = Field(
        default=None, description="Where signed audit checkpoints go (outside the database); default var/audit"
    )
    audit_checkpoint_seconds: float = Field(default=300.0, gt=0, description="Interval between audit checkpoints")

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / (service + '.db')}"

    def audit_signing_key(self) -> AuditKey:
        """The audit key; raises (naming the variable, never the value) when production has none or a weak one.

        Checked at start by the services and by `sentinel audit`, not by pydantic, whose errors print inputs.
        """
        if self.audit_key is None:
            if self.environment == "production":
                raise ValueError("SENTINEL_AUDIT_KEY is required when SENTINEL_ENVIRONMENT=production")
            return AuditKey.for_development()
        value = self.audit_key.get_secret_value()
        if self.environment == "production":
            try:
                return AuditKey.parse(value)
            except ValueError as exc:
                raise ValueError(f"SENTINEL_AUDIT_KEY: {exc}") from None
        return AuditKey(value.encode())

    def audit_checkpoint_directory(self) -> Path:
        return self.audit_checkpoint_dir or self.var_dir / "audit"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore")

    api_tokens: dict[str, ApiUser] = Field(default_factory=dict)

    @field_validator("api_tokens")
    @classmethod
    def _no_placeholder_tokens(cls, tokens: dict[str, ApiUser]) -> dict[str, ApiUser]:
        for token in tokens:
            if len(token) < 16 or token.lower() in {"changeme", "secret", "token"}:
                raise ValueError("API tokens must be at least 16 characters of real randomness")
        return tokens
