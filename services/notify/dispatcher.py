"""Sends queued deliveries: durable (rows in the database), leased (one sender per delivery across
replicas), retried with exponential backoff and jitter, and never silently dropped: a delivery that fails
for good is recorded in the alert's history, counted, and handed to the next escalation tier (a failover
timer, which the timer runner fires).

Pages first: due deliveries are claimed most urgent first (urgency.py) and sent concurrently within a
bound; low-urgency notices wait a short window and leave as one digest mail per recipient. Pages also have
a lane of their own, woken by the same commits: a page never waits for a batch of notices being handed over.

Crash-safe: the attempt is recorded (and committed) before the hand-off, and a lease is short and renewed
by a heartbeat while the holder lives; a crashed holder's work is retaken within one lease (seconds), its
retry is marked as such in the history and in the mail, and carries the same Message-ID, so a mail client
merges the rare duplicate (SMTP has no two-phase commit: after a hand-off, a crash before the commit
cannot be told apart from a lost hand-off).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from services.notify import scheduling, store, urgency
from services.notify.channels import DeliveryChannel, DeliveryError, OutgoingMessage
from services.notify.channels.email import EmailDelivery, MailChannel
from services.notify.digest import DigestItem, digest_id, digest_mail
from services.notify.mail_content import when
from services.notify.models import Delivery
from shared.clock import Clock
from shared.tracing import resumed, span
from shared.wakeup import Wakeup

log = logging.getLogger(__name__)
T = TypeVar("T")
LEASE = timedelta(seconds=15)
"""How long a crashed sender's deliveries stay untouched. A live sender renews it every HEARTBEAT."""
HEARTBEAT_SECONDS = 5.0
DIGEST_MAX = 100
"""At most this many notices in one digest mail; more make a second digest."""
URGENCY_LABELS = {
    urgency.CRITICAL: "critical",
    urgency.LIVE_FINDING: "live_finding",
    urgency.PAGE: "page",
    urgency.NOTICE: "notice",
    urgency.DIGEST: "digest",
}
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)


@dataclass(frozen=True)
class DeliveryMetrics:
    deliveries: Counter  # labels: channel, outcome = sent | retry | failed | interrupted
    errors: Counter  # unexpected errors in the dispatch loop (bugs, database down)
    wait: Histogram  # labels: urgency; from queued to handed over

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DeliveryMetrics:
        return cls(
            deliveries=Counter(
                "sentinel_notify_deliveries",
                "Delivery attempts by channel and outcome (interrupted: a sender stopped mid-attempt)",
                ["channel", "outcome"],
                registry=registry,
            ),
            errors=Counter(
                "sentinel_notify_dispatch_errors",
                "Unexpected errors in the delivery loop (it retries after the poll interval)",
                registry=registry,
            ),
            wait=Histogram(
                "sentinel_notify_delivery_wait_seconds",
                "From queueing a message to handing it over, by urgency (critical, live_finding, page, notice, digest)",
                ["urgency"],
                buckets=WAIT_BUCKETS,
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class Claimed:
    """A leased delivery, read in the transaction that recorded its attempt."""

    id: str
    alert_id: str
    channel: str
    recipient: str
    subject: str
    text: str
    html: str
    urgency: int
    attempt: int
    interrupted_at: datetime | None  # the start of an earlier attempt whose outcome was never recorded
    created_at: datetime
    trace_context: str | None = None  # the trace that queued it (the SAE's, from its webhook on)


def _claimed(row: Delivery) -> Claimed:
    return Claimed(
        id=row.id,
        alert_id=row.alert_id,
        channel=row.channel,
        recipient=row.recipient,
        subject=row.subject,
        text=row.body_text,
        html=row.body_html,
        urgency=row.urgency,
        attempt=row.attempts,
        interrupted_at=row.attempt_started_at,
        created_at=row.created_at,
        trace_context=row.trace_context,
    )


@dataclass(frozen=True)
class SendUnit:
    """What goes out as one message: one delivery, or a digest of several to one recipient."""

    deliveries: tuple[Claimed, ...]

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.deliveries]

    @property
    def urgency(self) -> int:
        return min(d.urgency for d in self.deliveries)

    def message(self) -> OutgoingMessage:
        first = self.deliveries[0]
        interrupted = any(d.interrupted_at is not None for d in self.deliveries)
        attempt = max(d.attempt for d in self.deliveries)
        if len(self.deliveries) == 1:
            return OutgoingMessage(
                delivery_id=first.id,
                recipient=first.recipient,
                subject=first.subject,
                text=first.text,
                html=first.html,
                attempt=attempt,
                after_interruption=interrupted,
            )
        content = digest_mail([DigestItem(d.id, d.subject, d.text, d.created_at) for d in self.deliveries])
        return OutgoingMessage(
            delivery_id=digest_id(self.ids),
            recipient=first.recipient,
            subject=content.subject,
            text=content.text,
            html=content.html,
            attempt=attempt,
            after_interruption=interrupted,
            digest_of=tuple(sorted(self.ids)),
        )


def retry_delay(delivery_id: str, attempt: int, base_seconds: float) -> timedelta:
    """Exponential backoff with deterministic jitter (derived from the id), so replicas spread out."""
    jitter = int.from_bytes(hashlib.sha256(f"{delivery_id}:{attempt}".encode()).digest()[:2], "big") / 65535
    seconds = min(base_seconds * 2 ** (attempt - 1), 3600.0) * (1 + jitter / 2)
    return timedelta(seconds=seconds)


def _span_attributes(delivery: Claimed) -> dict[str, str]:
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
        concurrency: int = 4,
        batch_size: int = 50,
        digest_window: timedelta = timedelta(minutes=5),
        lease: timedelta = LEASE,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        after_handoff: Callable[[OutgoingMessage], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        if timedelta(seconds=heartbeat_seconds) >= lease:
            raise ValueError("the heartbeat must renew the lease before it runs out")
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
        self._pages_wakeup = Wakeup(poll_seconds)
        self._busy_tier: int | None = None
        """The urgency the first lane is handing over; the page lane meanwhile sends what is more urgent."""
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._digest_window = digest_window
        self._lease = lease
        self._heartbeat_seconds = heartbeat_seconds
        self._after_handoff = after_handoff  # a failpoint for the crash tests; None in service
        self.holder = uuid.uuid4().hex
        """This dispatcher's name on the leases it holds; only its own heartbeat renews them."""

    def wake(self) -> None:
        self._wakeup.set()
        self._pages_wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Two lanes: everything due, most urgent first; and the page lane, so a page queued while a batch of
        notices is being handed over (seconds, with a slow mail server) leaves at once, not after the batch, and
        an SAE's page queued while a batch of other pages is (a backfill's lab pages, with their database writes)
        leaves before it too. The page lane works only while the first lane hands over a less urgent class than
        the most urgent, and takes only what is more urgent than that class, so each class keeps one bound."""
        await asyncio.gather(
            self._lane(stop, self._wakeup, pages_only=False),
            self._lane(stop, self._pages_wakeup, pages_only=True),
        )

    async def _lane(self, stop: asyncio.Event, wakeup: Wakeup, *, pages_only: bool) -> None:
        while not stop.is_set():
            try:
                # A backlog: claim the next batch at once, most urgent first, until nothing is due.
                while (not pages_only or self._outranked() is not None) and not stop.is_set():
                    if not await self.dispatch_due(pages_only=pages_only):
                        break
            except Exception:
                # Not swallowed: counted (alert on the metric), logged with its traceback, retried next poll.
                self._metrics.errors.inc()
                log.exception("delivery dispatch failed; retrying after %.1f s", wakeup.poll_seconds)
            await wakeup.wait()

    async def dispatch_due(self, limit: int | None = None, *, pages_only: bool = False) -> int:
        """Send what is due now, most urgent first, up to `concurrency` at a time; returns how many
        deliveries were attempted (a digest counts each notice it carries). `pages_only`: the page lane, which
        takes only what is more urgent than the class the first lane is handing over (pages, while it hands
        over notices; the classes above a page, while it hands over other pages).

        Leases keep the lanes (and replicas) apart: a delivery one of them holds is not claimed by another."""
        most = urgency.DIGEST
        if pages_only:
            outranked = self._outranked()
            if outranked is None:
                return 0
            most = min(outranked, urgency.PAGE)
        units, exhausted = await asyncio.to_thread(self._claim, limit or self._batch_size, most)
        if exhausted:
            error = (
                f"the sender stopped during each of its {self._max_attempts} attempts (the message may have gone "
                "out); giving up rather than risk a crash loop"
            )
            await self._failed(SendUnit(tuple(exhausted)), error, permanent=True)
        if not units:
            return len(exhausted)
        held = {d.id for unit in units for d in unit.deliveries}
        heartbeat = asyncio.create_task(self._heartbeat(held))
        gate = asyncio.Semaphore(self._concurrency)

        async def send(unit: SendUnit) -> None:
            async with gate:
                started = await self._written(self._start_attempt, unit)
                if started is not None:
                    await self._attempt(started)
                held.difference_update(unit.ids)

        tasks: list[asyncio.Task[None]] = []
        try:
            for tier in sorted({unit.urgency for unit in units}):
                # One urgency class at a time: a page never shares the bound with bulk mail.
                tasks = [asyncio.create_task(send(unit)) for unit in units if unit.urgency == tier]
                if not pages_only:
                    self._busy_tier = tier
                    if self._outranked() is not None:
                        self._pages_wakeup.set()  # more urgent ones committed from now on go by the page lane
                await asyncio.gather(*tasks)
        finally:
            if not pages_only:
                self._busy_tier = None
            for task in tasks:
                task.cancel()
            heartbeat.cancel()
        return sum(len(unit.deliveries) for unit in units) + len(exhausted)

    async def _heartbeat(self, held: set[str]) -> None:
        """Renew the leases on what this dispatcher is still sending, so nobody retakes live work."""
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            ids = sorted(held)
            try:
                renewed = await self.renew_leases(ids)
            except Exception:
                self._metrics.errors.inc()  # counted and logged; the next beat tries again
                log.exception("renewing delivery leases failed")
                continue
            if renewed < len(ids):  # recorded meanwhile, or a lease ran out and another replica took it
                log.info("renewed %d of %d delivery leases", renewed, len(ids))

    async def renew_leases(self, delivery_ids: Sequence[str]) -> int:
        return await asyncio.to_thread(self._renew, list(delivery_ids))

    def _renew(self, delivery_ids: list[str]) -> int:
        until = self._clock.now() + self._lease
        with Session(self._engine) as session, session.begin():
            return store.renew_delivery_leases(session, delivery_ids=delivery_ids, holder=self.holder, until=until)

    def _outranked(self) -> int | None:
        """The least urgent class the page lane may take now (more urgent than what the first lane is handing
        over), or None when it has nothing to do."""
        busy = self._busy_tier
        if busy is None or busy <= urgency.CRITICAL:
            return None
        return busy - 1

    def _claim(self, limit: int, most_urgency: int = urgency.DIGEST) -> tuple[list[SendUnit], list[Claimed]]:
        """Lease due deliveries, most urgent first, digest notices grouped per recipient. Also returns those
        whose every attempt was interrupted (a sender killed each time): they fail over instead."""
        now = self._clock.now()
        until = now + self._lease
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            ids = store.due_delivery_ids(
                session,
                now=now,
                limit=limit,
                digest_after=now - self._digest_window,
                most_urgency=most_urgency,
            )
            won = [
                i for i in ids if store.lease_delivery(session, delivery_id=i, now=now, until=until, holder=self.holder)
            ]
            groups: list[list[Delivery]] = []
            digests: dict[tuple[str, str], list[Delivery]] = {}
            for row in (session.get(Delivery, i) for i in won):
                if row is None:  # pragma: no cover - leased in this very transaction
                    continue
                if row.urgency != urgency.DIGEST:
                    groups.append([row])
                    continue
                key = (row.channel, row.recipient)
                if key not in digests:
                    digests[key] = []
                    groups.append(digests[key])
                digests[key].append(row)
            for (channel, recipient), members in digests.items():
                room = DIGEST_MAX - len(members)
                for i in store.digest_companion_ids(
                    session, channel=channel, recipient=recipient, now=now, limit=max(room, 0)
                ):
                    if store.lease_delivery(session, delivery_id=i, now=now, until=until, holder=self.holder):
                        row = session.get(Delivery, i)
                        if row is not None:
                            members.append(row)
            units: list[SendUnit] = []
            exhausted: list[Claimed] = []
            for group in groups:
                claimed: list[Claimed] = []
                for row in group:
                    # Still set: an earlier attempt started and never recorded its outcome (its sender died).
                    spent = row.attempt_started_at is not None and row.attempts >= self._max_attempts
                    (exhausted if spent else claimed).append(_claimed(row))
                if claimed:
                    units.append(SendUnit(tuple(claimed)))
            return units, exhausted

    def _start_attempt(self, unit: SendUnit) -> SendUnit | None:
        """Count and commit the attempt just before its hand-off (not for the whole batch at claim time, so a
        crash marks only what was really in flight); an earlier attempt that never recorded its outcome is
        written to the alert's history now. None: the lease was lost meanwhile and another sender has it."""
        now = self._clock.now()
        started: list[Claimed] = []
        interrupted: list[Claimed] = []
        with Session(self._engine) as session, session.begin():
            if any(d.interrupted_at is not None for d in unit.deliveries):
                store.lock_audit(session)  # first, as every notify transaction that writes the audit trail does
            for claimed in unit.deliveries:
                row = session.get(Delivery, claimed.id)
                if row is None or row.status != "pending" or row.leased_by != self.holder:
                    continue
                before = row.attempt_started_at
                row.attempts += 1
                row.attempt_started_at = now
                session.add(row)
                current = replace(_claimed(row), interrupted_at=before)
                started.append(current)
                if before is not None:
                    interrupted.append(current)
                    store.record(
                        session,
                        alert_id=row.alert_id,
                        actor="system",
                        action="delivery_interrupted",
                        detail=f"{row.channel} to {row.recipient}: attempt {row.attempts - 1} (started "
                        f"{when(before)}) was interrupted before its outcome was recorded; "
                        f"attempt {row.attempts} may duplicate it and carries the same message id",
                        now=now,
                        delivery_id=row.id,
                        attempt=row.attempts,
                    )
        for d in interrupted:
            self._metrics.deliveries.labels(channel=d.channel, outcome="interrupted").inc()
        if interrupted:
            log.warning("retrying %d delivery(ies) whose sender stopped mid-attempt", len(interrupted))
        return SendUnit(tuple(started)) if started else None

    async def _attempt(self, unit: SendUnit) -> None:
        first = unit.deliveries[0]
        channel = self._channels.get(first.channel)
        try:
            message = unit.message()
            if channel is None:
                raise DeliveryError(f"no '{first.channel}' channel is configured")
            # The send is a span of the trace that queued the delivery: the SAE's, from its webhook on.
            with (
                resumed(first.trace_context),
                span(
                    self._tracer,
                    f"{first.channel} send",
                    kind=SpanKind.CLIENT,
                    attributes=_span_attributes(first),
                ),
            ):
                await channel.deliver(message)
            if self._after_handoff is not None:
                self._after_handoff(message)
        except DeliveryError as exc:
            await self._failed(unit, str(exc), permanent=False)
            return
        except Exception as exc:
            # A message that cannot even be built or handed over will never go: fail it now, visibly, and go
            # on with the batch, so one bad message never holds back the mails queued behind it.
            log.exception("delivery %s cannot be sent", ", ".join(unit.ids))
            await self._failed(unit, f"{type(exc).__name__}: {exc}", permanent=True)
            return
        await self._written(self._record_sent, unit)

    async def _written(self, write: Callable[[SendUnit], T], unit: SendUnit) -> T:
        """A write around a hand-off, retried in place while the database cannot be written (a full disk, a
        lost connection, a lock): the heartbeat keeps the lease meanwhile, so a mail already handed over is
        recorded as sent once the database is back, not sent again by whoever retakes the lease when it ends.
        Other errors propagate: the lane logs them and moves on."""
        delay = 0.05
        while True:
            try:
                return await asyncio.to_thread(write, unit)
            except OperationalError:
                self._metrics.errors.inc()
                log.exception("recording delivery %s failed; retrying in %.2f s", ", ".join(unit.ids), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._wakeup.poll_seconds)

    def _record_sent(self, unit: SendUnit) -> None:
        now = self._clock.now()
        bundled = len(unit.deliveries)
        with Session(self._engine) as session, session.begin():
            store.lock_audit(session)
            for claimed in unit.deliveries:
                delivery = session.get(Delivery, claimed.id)
                if delivery is None or delivery.status == "sent":  # recorded by a retry whose commit went through
                    continue
                delivery.status = "sent"
                delivery.sent_at = now
                delivery.leased_until = None
                delivery.leased_by = None
                delivery.attempt_started_at = None
                session.add(delivery)
                late = f" (attempt {delivery.attempts})" if delivery.attempts > 1 else ""
                digest = f" in a digest of {bundled} notices" if bundled > 1 else ""
                store.record(
                    session,
                    alert_id=delivery.alert_id,
                    actor="system",
                    action="delivered",
                    detail=f"{delivery.channel} to {delivery.recipient}{digest}{late}",
                    now=now,
                    delivery_id=delivery.id,
                )
        for claimed in unit.deliveries:
            self._metrics.deliveries.labels(channel=claimed.channel, outcome="sent").inc()
            self._metrics.wait.labels(urgency=URGENCY_LABELS.get(claimed.urgency, "notice")).observe(
                max((now - claimed.created_at).total_seconds(), 0.0)
            )

    async def _failed(self, unit: SendUnit, error: str, *, permanent: bool) -> None:
        failed_for_good = await self._written(
            lambda failed: self._record_failure(failed.ids, error, permanent=permanent), unit
        )
        if failed_for_good and self._on_failover is not None:
            self._on_failover()

    def _record_failure(self, delivery_ids: Sequence[str], error: str, *, permanent: bool = False) -> bool:
        """The attempt was counted when it started; after the last one, fail visibly and hand over."""
        now = self._clock.now()
        outcomes: list[tuple[str, str]] = []
        with Session(self._engine) as session, session.begin():
            store.lock_audit(session)
            for delivery_id in delivery_ids:
                delivery = session.get(Delivery, delivery_id)
                if delivery is None:
                    continue
                outcomes.append((delivery.channel, self._fail_one(session, delivery, error, permanent, now)))
        for channel, outcome in outcomes:
            self._metrics.deliveries.labels(channel=channel, outcome=outcome).inc()
        log.warning(
            "delivery %s%s: %s (%s)",
            delivery_ids[0],
            f" and {len(delivery_ids) - 1} more in its digest" if len(delivery_ids) > 1 else "",
            outcomes[0][1] if outcomes else "gone",
            error,
        )
        return any(outcome == "failed" for _, outcome in outcomes)

    def _fail_one(self, session: Session, delivery: Delivery, error: str, permanent: bool, now: datetime) -> str:
        delivery.last_error = error[:2000]
        delivery.leased_until = None
        delivery.leased_by = None
        delivery.attempt_started_at = None
        session.add(delivery)
        if permanent or delivery.attempts >= self._max_attempts:
            delivery.status = "failed"
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
            return "failed"
        delivery.next_attempt_at = now + retry_delay(delivery.id, delivery.attempts, self._base_backoff)
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
        return "retry"
