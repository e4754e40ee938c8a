"""Prometheus metric sets, each built on an injected registry (no process-global registry)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PROCESSING_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ConsumerMetrics:
    processed: Counter  # labels: outcome = processed | duplicate | dead_lettered
    processing_seconds: Histogram
    dead_letters: Counter
    restarts: Counter
    lag: Gauge  # labels: topic, partition

    @classmethod
    def create(cls, registry: CollectorRegistry, service: str) -> ConsumerMetrics:
        return cls(
            processed=Counter(
                f"sentinel_{service}_events_processed", "Messages consumed, by outcome", ["outcome"], registry=registry
            ),
            processing_seconds=Histogram(
                f"sentinel_{service}_processing_seconds",
                "Time to process one message (its share of its batch), transaction included",
                buckets=PROCESSING_BUCKETS,
                registry=registry,
            ),
            dead_letters=Counter(
                f"sentinel_{service}_dead_letters", "Messages sent to a dead-letter topic", registry=registry
            ),
            restarts=Counter(
                f"sentinel_{service}_consumer_restarts",
                "Consumer restarts after a transient failure",
                registry=registry,
            ),
            lag=Gauge(
                f"sentinel_{service}_consumer_lag",
                "Messages behind the partition's high-water mark",
                ["topic", "partition"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class OutboxMetrics:
    published: Counter
    failures: Counter
    backlog: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, service: str) -> OutboxMetrics:
        return cls(
            published=Counter(f"sentinel_{service}_outbox_published", "Outbox messages published", registry=registry),
            failures=Counter(
                f"sentinel_{service}_outbox_failures", "Outbox publish attempts that failed", registry=registry
            ),
            backlog=Gauge(f"sentinel_{service}_outbox_backlog", "Outbox messages not yet published", registry=registry),
        )


@dataclass(frozen=True)
class HttpMetrics:
    requests: Counter  # labels: route, status

    @classmethod
    def create(cls, registry: CollectorRegistry, service: str) -> HttpMetrics:
        return cls(
            requests=Counter(
                f"sentinel_{service}_http_requests",
                "HTTP requests by route and status",
                ["route", "status"],
                registry=registry,
            )
        )
