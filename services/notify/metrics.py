"""Notify's Prometheus metrics: timers, officer response times, and alert/obligation gauges read from the
database on each scrape (so every replica reports the same truth, and nothing drifts after a restart)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from services.notify.models import Alert, Obligation
from services.notify.obligations import OPEN_STATES
from shared.clock import Clock

RESPONSE_BUCKETS = tuple(float(m * 60) for m in (5, 15, 30, 60, 120, 240, 480, 720, 1440, 2160, 2880))
"""5 min to 48 h: the range in which a page is acknowledged and a report filed."""
LATENESS_BUCKETS = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


@dataclass(frozen=True)
class TimerMetrics:
    fired: Counter  # labels: kind, outcome = fired | skipped | deferred
    lateness: Histogram  # labels: kind
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TimerMetrics:
        return cls(
            fired=Counter(
                "sentinel_notify_timers",
                "Due timers handled, by kind and outcome",
                ["kind", "outcome"],
                registry=registry,
            ),
            lateness=Histogram(
                "sentinel_notify_timer_lateness_seconds",
                "How long after its due time a timer fired",
                ["kind"],
                buckets=LATENESS_BUCKETS,
                registry=registry,
            ),
            errors=Counter(
                "sentinel_notify_timer_errors",
                "Unexpected errors firing timers (the timer stays due and is retried)",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class DeadLetterMetrics:
    alerts: Counter  # labels: outcome = opened | duplicate
    restarts: Counter
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DeadLetterMetrics:
        return cls(
            alerts=Counter(
                "sentinel_notify_dead_letter_alerts",
                "Dead-lettered messages read by notify: opened an alert, or one was already open",
                ["outcome"],
                registry=registry,
            ),
            restarts=Counter(
                "sentinel_notify_dead_letter_watch_restarts",
                "Restarts of the dead-letter watch after a transient failure (broker, database)",
                registry=registry,
            ),
            errors=Counter(
                "sentinel_notify_dead_letter_watch_errors",
                "Dead letters that could not be turned into an alert (a bug; retried, never skipped)",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class ResponseMetrics:
    time_to_acknowledge: Histogram  # labels: kind (alert kind)
    time_to_complete: Histogram  # labels: kind (obligation kind), from the clock's start

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ResponseMetrics:
        return cls(
            time_to_acknowledge=Histogram(
                "sentinel_notify_time_to_acknowledge_seconds",
                "From paging to acknowledgement",
                ["kind"],
                buckets=RESPONSE_BUCKETS,
                registry=registry,
            ),
            time_to_complete=Histogram(
                "sentinel_notify_time_to_complete_seconds",
                "From the obligation's clock start to its completion",
                ["kind"],
                buckets=RESPONSE_BUCKETS,
                registry=registry,
            ),
        )


DUE_SOON = timedelta(hours=1)


def as_utc(moment: datetime) -> datetime:
    """Aggregates bypass the column type, so SQLite hands back naive UTC text-parsed datetimes."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class StateCollector(Collector):
    """Open alerts and open/overdue obligations by trial and kind, counted in the database at scrape time."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        alerts = GaugeMetricFamily(
            "sentinel_notify_alerts_open", "Alerts not yet acknowledged", labels=["trial", "kind"]
        )
        obligations = GaugeMetricFamily(
            "sentinel_notify_obligations",
            "Obligations not yet done, by state (open: before its deadline; overdue: past it)",
            labels=["trial", "kind", "state"],
        )
        due_soon = GaugeMetricFamily(
            "sentinel_notify_obligations_due_soon_unacknowledged",
            "Obligations due within the hour whose alert nobody has acknowledged",
            labels=["trial", "kind"],
        )
        next_deadline = GaugeMetricFamily(
            "sentinel_notify_obligation_next_deadline_seconds",
            "Seconds until the nearest open obligation's deadline (negative: overdue)",
            labels=["trial", "kind"],
        )
        now = self._clock.now()
        with Session(self._engine) as session:
            for trial, kind, count in session.exec(
                select(Alert.trial_id, Alert.kind, func.count())
                .where(Alert.state == "open")
                .group_by(col(Alert.trial_id), col(Alert.kind))
            ).all():
                alerts.add_metric([trial, kind], count)
            overdue = col(Obligation.due_at) < now
            for trial, kind, is_overdue, count in session.exec(
                select(Obligation.trial_id, Obligation.kind, overdue, func.count())
                .where(col(Obligation.state).in_(OPEN_STATES))
                .group_by(col(Obligation.trial_id), col(Obligation.kind), overdue)
            ).all():
                obligations.add_metric([trial, kind, "overdue" if is_overdue else "open"], count)
            soon = col(Obligation.due_at) < now + DUE_SOON
            for trial, kind, count in session.exec(
                select(Obligation.trial_id, Obligation.kind, func.count())
                .join(Alert, col(Alert.id) == col(Obligation.alert_id))
                .where(col(Obligation.state).in_(OPEN_STATES), ~overdue, soon, Alert.state == "open")
                .group_by(col(Obligation.trial_id), col(Obligation.kind))
            ).all():
                due_soon.add_metric([trial, kind], count)
            for trial, kind, nearest in session.exec(
                select(Obligation.trial_id, Obligation.kind, func.min(Obligation.due_at))
                .where(col(Obligation.state).in_(OPEN_STATES))
                .group_by(col(Obligation.trial_id), col(Obligation.kind))
            ).all():
                next_deadline.add_metric([trial, kind], (as_utc(nearest) - now).total_seconds())
        yield alerts
        yield obligations
        yield due_soon
        yield next_deadline
