"""Sends queued deliveries: durable (rows in the database), leased (one sender per delivery across
replicas), retried with exponential backoff and jitter, and never silently dropped: a delivery that fails
for good is recorded in the alert's history, counted, and handed to the next escalation tier (a failover
timer, which the timer runner fires)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine
from sqlmodel import Session

from services.notify import scheduling, store
from services.notify.channels import DeliveryChannel, DeliveryError, OutgoingMessage
from services.notify.channels.email import EmailDelivery, MailChannel
from services.notify.models import Delivery
from shared.clock import Clock
from shared.tracing import resumed, span
from shared.wakeup import Wakeup

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)
"""Longer than a batch (10 deliveries x the channel timeout) takes, so no other replica re-sends one in flight."""


@dataclass(frozen=True)
class DeliveryMetrics:
    deliveries: Counter  # labels: channel, outcome = sent | retry | failed
    errors: Counter  # unexpected errors in the dispatch loop (bugs, database down)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DeliveryMetrics:
        return cls(
            deliveries=Counter(
                "sentinel_notify_deliveries",
                "Delivery attempts by channel and outcome",
                ["channel", "outcome"],
                registry=registry,
            ),
            errors=Counter(
                "sentinel_notify_dispatch_errors",
                "Unexpected errors in the delivery loop (it retries after the poll interval)",
                registry=registry,
            ),
        )


def retry_delay(delivery_id: str, attempt: int, base_seconds: float) -> timedelta:
    """Exponential backoff with deterministic jitter (derived from the id), so replicas spread out."""
    jitter = int.from_bytes(hashlib.sha256(f"{delivery_id}:{attempt}".encode()).digest()[:2], "big") / 65535
    seconds = min(base_seconds * 2 ** (attempt - 1), 3600.0) * (1 + jitter / 2)
    return timedelta(seconds=seconds)


def _span_attributes(delivery: Delivery) -> dict[str, str]:
    """Ids only: the recipient's address and the message's content stay out of traces."""
    return {
        "sentinel.delivery_id": delivery.id,
        "sentinel.alert_id": delivery.alert_id,
        "sentinel.channel": delivery.channel,
    }


class DeliveryDispatcher:
    def __init__(
        self,
        *,
        engine: Engine,
        channel: MailChannel,
        clock: Clock,
        metrics: DeliveryMetrics,
        max_attempts: int,
        base_backoff_seconds: float,
        poll_seconds: float = 1.0,
        webhook: DeliveryChannel | None = None,
        on_failover: Callable[[], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._engine = engine
        self._tracer = tracer
        self._channels: dict[str, DeliveryChannel] = {"email": EmailDelivery(channel)}
        if webhook is not None:
            self._channels["webhook"] = webhook
        self._clock = clock
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._base_backoff = base_backoff_seconds
        self._on_failover = on_failover
        self._wakeup = Wakeup(poll_seconds)

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.dispatch_due()
            except Exception:
                # Not swallowed: counted (alert on the metric), logged with its traceback, retried next poll.
                self._metrics.errors.inc()
                log.exception("delivery dispatch failed; retrying after %.1f s", self._wakeup.poll_seconds)
            await self._wakeup.wait()

    async def dispatch_due(self, limit: int = 10) -> int:
        """Send every delivery that is due now; return how many were attempted."""
        claimed = await asyncio.to_thread(self._claim, limit)
        for delivery in claimed:
            await self._attempt(delivery)
        return len(claimed)

    def _claim(self, limit: int) -> list[Delivery]:
        now = self._clock.now()
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            ids = store.due_delivery_ids(session, now=now, limit=limit)
            won = [i for i in ids if store.lease_delivery(session, delivery_id=i, now=now, until=now + LEASE)]
            rows = [session.get(Delivery, i) for i in won]
            return [row for row in rows if row is not None]

    async def _attempt(self, delivery: Delivery) -> None:
        channel = self._channels.get(delivery.channel)
        message = OutgoingMessage(
            delivery_id=delivery.id,
            recipient=delivery.recipient,
            subject=delivery.subject,
            text=delivery.body_text,
            html=delivery.body_html,
        )
        try:
            if channel is None:
                raise DeliveryError(f"no '{delivery.channel}' channel is configured")
            # The send is a span of the trace that queued the delivery: the SAE's, from its webhook on.
            with (
                resumed(delivery.trace_context),
                span(
                    self._tracer,
                    f"{delivery.channel} send",
                    kind=SpanKind.CLIENT,
                    attributes=_span_attributes(delivery),
                ),
            ):
                await channel.deliver(message)
        except DeliveryError as exc:
            await self._failed(delivery.id, str(exc), permanent=False)
            return
        except Exception as exc:
            # A message that cannot even be built or handed over will never go: fail it now, visibly, and go
            # on with the batch, so one bad message never holds back the mails queued behind it.
            log.exception("delivery %s cannot be sent", delivery.id)
            await self._failed(delivery.id, f"{type(exc).__name__}: {exc}", permanent=True)
            return
        await asyncio.to_thread(self._record_sent, delivery.id)

    def _record_sent(self, delivery_id: str) -> None:
        now = self._clock.now()
        with Session(self._engine) as session, session.begin():
            store.lock_audit(session)
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                return
            delivery.status = "sent"
            delivery.attempts += 1
            delivery.sent_at = now
            delivery.leased_until = None
            channel = delivery.channel
            late = f" (attempt {delivery.attempts})" if delivery.attempts > 1 else ""
            store.record(
                session,
                alert_id=delivery.alert_id,
                actor="system",
                action="delivered",
                detail=f"{delivery.channel} to {delivery.recipient}{late}",
                now=now,
                delivery_id=delivery.id,
            )
        self._metrics.deliveries.labels(channel=channel, outcome="sent").inc()

    async def _failed(self, delivery_id: str, error: str, *, permanent: bool) -> None:
        failed_for_good = await asyncio.to_thread(self._record_failure, delivery_id, error, permanent=permanent)
        if failed_for_good and self._on_failover is not None:
            self._on_failover()

    def _record_failure(self, delivery_id: str, error: str, *, permanent: bool = False) -> bool:
        """Count the attempt; after the last one, fail visibly and hand over to the next tier."""
        now = self._clock.now()
        with Session(self._engine) as session, session.begin():
            store.lock_audit(session)
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                return False
            channel = delivery.channel
            delivery.attempts += 1
            delivery.last_error = error[:2000]
            delivery.leased_until = None
            if permanent or delivery.attempts >= self._max_attempts:
                delivery.status = "failed"
                outcome = "failed"
                store.record(
                    session,
                    alert_id=delivery.alert_id,
                    actor="system",
                    action="delivery_failed",
                    detail=f"{delivery.channel} to {delivery.recipient} failed after "
                    f"{delivery.attempts} attempts: {error}; escalating to the next tier",
                    now=now,
                    delivery_id=delivery.id,
                )
                store.schedule_timer(
                    session,
                    timer_id=scheduling.failover_timer_id(delivery.id),
                    kind=scheduling.FAILOVER,
                    alert_id=delivery.alert_id,
                    note=delivery.id,
                    due_at=now,
                    now=now,
                )
            else:
                delivery.next_attempt_at = now + retry_delay(delivery.id, delivery.attempts, self._base_backoff)
                outcome = "retry"
                store.record(
                    session,
                    alert_id=delivery.alert_id,
                    actor="system",
                    action="delivery_retry",
                    detail=f"{delivery.channel} to {delivery.recipient}: {error}; next attempt "
                    f"{delivery.next_attempt_at.isoformat()}",
                    now=now,
                    delivery_id=delivery.id,
                )
        log.warning("delivery %s: %s (%s)", delivery_id, outcome, error)
        self._metrics.deliveries.labels(channel=channel, outcome=outcome).inc()
        return outcome == "failed"
