"""What ingest's request handlers need, built once by the composition root and held on app.state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine

from services.ingest.settings import IngestSettings
from shared.clock import Clock
from shared.kafka import Publisher
from shared.webhook_signatures import WebhookSecret


@dataclass(frozen=True)
class IngestMetrics:
    published: Counter  # labels: type
    rejected: Counter  # labels: reason
    duplicates: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        return cls(
            published=Counter(
                "sentinel_ingest_events_published",
                "Events the broker acknowledged, by type",
                ["type"],
                registry=registry,
            ),
            rejected=Counter(
                "sentinel_ingest_requests_rejected", "Requests refused, by reason", ["reason"], registry=registry
            ),
            duplicates=Counter(
                "sentinel_ingest_duplicates", "Events already accepted earlier (answered 200)", registry=registry
            ),
        )


@dataclass(frozen=True)
class IngestRuntime:
    settings: IngestSettings
    secrets: dict[str, WebhookSecret]
    engine: Engine
    publisher: Publisher
    clock: Clock
    metrics: IngestMetrics

    @property
    def signature_tolerance(self) -> timedelta:
        return timedelta(seconds=self.settings.signature_tolerance_seconds)
