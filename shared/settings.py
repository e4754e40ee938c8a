"""Configuration from `SENTINEL_*` environment variables, built once in each service's composition root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import topics

Role = Literal["viewer", "officer", "admin"]


class ApiUser(BaseModel):
    user: str
    role: Role


@dataclass(frozen=True)
class ConsumerTuning:
    """Batch sizes and the transaction time budget of a consumer: throughput against latency."""

    max_batch: int = 500
    bulk_batch: int = 50
    transaction_seconds: float = 0.2


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
    consumer_max_batch: int = Field(default=500, ge=1, le=10_000, description="Records per poll of a consumer")
    consumer_bulk_batch: int = Field(
        default=50, ge=1, le=10_000, description="Records per poll of the bulk lane: what an urgent event may wait for"
    )
    consumer_transaction_seconds: float = Field(
        default=0.2, gt=0, le=60, description="A consumer transaction takes no more records after this long"
    )

    def consumer_tuning(self) -> ConsumerTuning:
        return ConsumerTuning(
            max_batch=self.consumer_max_batch,
            bulk_batch=self.consumer_bulk_batch,
            transaction_seconds=self.consumer_transaction_seconds,
        )

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / (service + '.db')}"


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
