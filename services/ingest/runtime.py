"""What ingest's request handlers need, built once by the composition root and held on app.state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Engine

from services.ingest.commit_queue import CommitQueue
from services.ingest.rate_limit import RateLimiter
from services.ingest.record_claims import RecordClaims
from services.ingest.settings import IngestSettings
from services.ingest.sources import Source
from services.ingest.store import AcceptedWrite, HeldReader
from shared.clock import Clock
from shared.kafka import Publisher


@dataclass(frozen=True)
class IngestMetrics:
    published: Counter  # labels: type
    rejected: Counter  # labels: reason
    duplicates: Counter
    stale: Counter
    flagged: Counter  # labels: kind (ae, lab)
    purged: Counter
    redcap_pulls: Counter  # labels: kind (trigger, reconcile), outcome (ok, failed)
    redcap_pending: Gauge
    redcap_unmappable: Counter  # labels: kind (trigger, reconcile)

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
            stale=Counter(
                "sentinel_ingest_stale", "Older versions replayed after a newer one (not published)", registry=registry
            ),
            flagged=Counter(
                "sentinel_ingest_flagged_events",
                "Published events carrying data-quality flags",
                ["kind"],
                registry=registry,
            ),
            purged=Counter(
                "sentinel_ingest_deliveries_purged", "Delivery ids forgotten after retention", registry=registry
            ),
            redcap_pulls=Counter(
                "sentinel_ingest_redcap_pulls", "REDCap API pulls", ["kind", "outcome"], registry=registry
            ),
            redcap_pending=Gauge(
                "sentinel_ingest_redcap_pending_triggers", "Stored REDCap triggers not yet pulled", registry=registry
            ),
            redcap_unmappable=Counter(
                "sentinel_ingest_redcap_unmappable_forms",
                "Pulled REDCap forms the source's map could not read (kept as 'unmappable' trigger rows)",
                ["kind"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class IngestRuntime:
    settings: IngestSettings
    sources: dict[str, Source]
    engine: Engine
    publisher: Publisher
    clock: Clock
    metrics: IngestMetrics
    rate_limiter: RateLimiter
    commits: CommitQueue[AcceptedWrite]
    reader: HeldReader
    """SQLite: the idempotency reads on the event loop (PostgreSQL reads from the pool, in a thread)."""
    claims: RecordClaims
    """The records whose version a request in flight is deciding (`record_claims`)."""

    @cached_property  # read on every post; the settings do not change while the app runs
    def signature_tolerance(self) -> timedelta:
        return timedelta(seconds=self.settings.signature_tolerance_seconds)
