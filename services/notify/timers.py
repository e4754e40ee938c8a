"""The timer runner: fires due timers from the database, driven by an injected clock.

Durable: due actions are rows, so a restart loses none; one missed while notify was down fires once on
start, marked late in the alert's history. Safe with replicas: due rows are claimed with
`SELECT ... FOR UPDATE SKIP LOCKED` plus a compare-and-set lease, and each timer is marked fired by a
compare-and-set in the same transaction as its work, so a step is never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from services.notify import store, timed_actions
from services.notify.metrics import TimerMetrics
from services.notify.models import Timer
from shared.clock import Clock
from shared.protocol import Protocol
from shared.wakeup import Wakeup

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=30)
"""A crashed runner's claimed timers are retaken after this. Short is safe: firing is a compare-and-set in
the firing transaction, so a lease that runs out mid-batch costs a wasted claim, never a second page."""


class TimerRunner:
    def __init__(
        self,
        *,
        engine: Engine,
        protocol: Protocol,
        clock: Clock,
        metrics: TimerMetrics,
        poll_seconds: float = 1.0,
        late_after: timedelta = timedelta(minutes=1),
        on_fired: Callable[[], None] | None = None,
        console_url: str | None = None,
    ) -> None:
        self._engine = engine
        self._protocol = protocol
        self._clock = clock
        self._metrics = metrics
        self._late_after = late_after
        self._console_url = console_url
        self.on_fired = on_fired
        self._wakeup = Wakeup(poll_seconds)

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while await self.run_due() and not stop.is_set():
                    pass  # a full batch: there may be more due
            except Exception:
                # Not swallowed: counted, logged with its traceback; the timer stays due and is retried.
                self._metrics.errors.inc()
                log.exception("firing timers failed; retrying after %.1f s", self._wakeup.poll_seconds)
            await self._wakeup.wait()

    async def run_due(self, now: datetime | None = None, *, limit: int = 100) -> int:
        """Fire every timer due at `now` (default: the clock's now); returns how many were handled."""
        handled = await asyncio.to_thread(self.fire_due, now or self._clock.now(), limit)
        if handled and self.on_fired is not None:
            self.on_fired()
        return handled

    def fire_due(self, now: datetime, limit: int = 100) -> int:
        claimed = self._claim(now, limit)
        failures: list[Exception] = []
        handled = 0
        for timer_id in claimed:
            try:
                handled += self._fire(timer_id, now)
            except Exception as exc:
                self._metrics.errors.inc()
                log.exception("timer %s failed; it stays due and is retried when its lease expires", timer_id)
                failures.append(exc)
        if failures:
            raise failures[0]
        return handled

    def _claim(self, now: datetime, limit: int) -> list[str]:
        with Session(self._engine) as session, session.begin():
            ids = store.due_timer_ids(session, now=now, limit=limit)
            return [i for i in ids if store.lease_timer(session, timer_id=i, now=now, until=now + LEASE)]

    def _fire(self, timer_id: str, now: datetime) -> int:
        with Session(self._engine) as session, session.begin():
            store.lock_audit(session)
            if not store.mark_timer_fired(session, timer_id=timer_id, now=now):
                return 0  # another replica fired it after our lease ran out
            timer = session.get(Timer, timer_id)
            if timer is None:  # pragma: no cover - the row was just updated in this transaction
                raise LookupError(timer_id)
            lateness = now - timer.due_at
            kind = timer.kind
            late_by = lateness if lateness > self._late_after else None
            outcome = timed_actions.fire(session, timer, now=now, protocol=self._protocol, late_by=late_by)
            store.link_queued_to_console(session, console_url=self._console_url, now=now)
        self._metrics.fired.labels(kind=kind, outcome=outcome).inc()
        if outcome == "fired":
            self._metrics.lateness.labels(kind=kind).observe(max(lateness.total_seconds(), 0.0))
        return 1
