"""Configuration from `SENTINEL_*` environment variables, built once in each service's composition root.

Secrets never reach a message: settings hide the input in validation errors (`hide_input_in_errors`), API
tokens are validated here so that an error names the entry's position and user, never the token, and secret
values are `SecretStr` or `TokenTable`, whose repr shows no secret.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, GetCoreSchemaHandler, SecretStr, ValidationError
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import topics
from shared.audit import AuditKey

Role = Literal["viewer", "officer", "admin"]
PLACEHOLDER_TOKENS = frozenset({"changeme", "secret", "token"})


class ApiUser(BaseModel):
    user: str
    role: Role


class TokenTable(Mapping[str, ApiUser]):
    """Bearer token -> user, from `SENTINEL_API_TOKENS`; its repr and every error it raises omit the tokens."""

    def __init__(self, tokens: Mapping[str, ApiUser] | None = None) -> None:
        self._tokens = dict(tokens or {})

    @classmethod
    def parse(cls, raw: Any) -> TokenTable:
        """JSON text or a mapping `{"token": {"user", "role"}}`; errors say which entry (by position and user)."""
        if isinstance(raw, TokenTable):
            return raw
        if isinstance(raw, str | bytes):
            try:
                raw = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise ValueError("must be a JSON object {token: {user, role}} (the text is not valid JSON)") from None
        if not isinstance(raw, Mapping):
            raise ValueError("must be a JSON object {token: {user, role}}")
        tokens: dict[str, ApiUser] = {}
        for position, (token, entry) in enumerate(raw.items(), start=1):
            user = entry.get("user") if isinstance(entry, Mapping) else None
            where = f"entry {position}" + (f" (user {user!r})" if isinstance(user, str) else "")
            if not isinstance(token, str) or len(token) < 16 or token.lower() in PLACEHOLDER_TOKENS:
                raise ValueError(f"{where}: API tokens must be at least 16 characters of real randomness")
            try:
                tokens[token] = ApiUser.model_validate(entry)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"{where}: {problems}") from None
        return cls(tokens)

    def match(self, presented: str) -> ApiUser | None:
        """The user whose token this is, compared in constant time with every known token."""
        found = None
        for token, user in self._tokens.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = user
        return found

    def __getitem__(self, token: str) -> ApiUser:
        return self._tokens[token]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"TokenTable({len(self._tokens)} token(s) hidden)"

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(lambda t: repr(t))
        )


@dataclass(frozen=True)
class ConsumerTuning:
    """Batch sizes and the transaction time budget of a consumer: throughput against latency."""

    max_batch: int = 500
    bulk_batch: int = 200
    transaction_seconds: float = 0.3


class CommonSettings(BaseSettings):
    """What every service needs: broker, database, topics, protocol."""

    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore", hide_input_in_errors=True)

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
    consumer_max_batch: int = Field(default=500, ge=1, le=10_000, description="Records per poll of a consumer")
    consumer_bulk_batch: int = Field(
        default=200, ge=1, le=10_000, description="Records per poll of the bulk lane: what an urgent event may wait for"
    )
    consumer_transaction_seconds: float = Field(
        default=0.3, gt=0, le=60, description="A consumer transaction takes no more records after this long"
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
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore", hide_input_in_errors=True)

    api_tokens: TokenTable = Field(default_factory=TokenTable)
