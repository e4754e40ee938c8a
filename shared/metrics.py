"""Prometheus metric sets, each built on an injected registry (no process-global registry)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.gc_collector import GCCollector

PROCESSING_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Request latency: a webhook answers after the broker's ack (ms), a slow one waits on a retrying publish (s).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DISTRIBUTION = "safety-sentinel"


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
    duration: Histogram  # labels: route, method

    @classmethod
    def create(cls, registry: CollectorRegistry, service: str) -> HttpMetrics:
        return cls(
            requests=Counter(
                f"sentinel_{service}_http_requests",
                "HTTP requests by route and status",
                ["route", "status"],
                registry=registry,
            ),
            duration=Histogram(
                f"sentinel_{service}_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template (unmatched paths share one label)",
                ["route", "method"],
                buckets=HTTP_BUCKETS,
                registry=registry,
            ),
        )


def register_process_metrics(registry: CollectorRegistry, service: str) -> None:
    """What every registry carries besides the service's own metrics: `process_*` (CPU, memory, open files,
    start time), `python_info`, `python_gc_*`, and `sentinel_build_info` (which build runs where)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    build = Gauge(
        "sentinel_build_info",
        "Always 1; the labels say which build of which service runs",
        ["service", "version", "python"],
        registry=registry,
    )
    build.labels(service=service, version=installed_version(), python=platform.python_version()).set(1)


def installed_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
