"""REDCap: stored Data Entry Triggers are pulled through the API and published; a periodic pull catches the rest.

REDCap sends no values in a trigger, never retries one, and fires none for API, CSV or mobile-app imports. So
the trigger is stored before we answer, the pull is retried with backoff until it succeeds (failures stay on
the row and in metrics, never dropped), and a reconciliation pull (`dateRangeBegin`) runs every
`reconcile_minutes` on the injected clock. A record that no longer exists becomes status events.

A form the map cannot read (a typo the site must correct) does not hold back the rest: what maps is published,
the cursor moves on, and each unmappable form is kept as an `unmappable` trigger row and counted in a metric.
Retrying would not help; the site's correction fires a new trigger, or the next reconciliation pulls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlmodel import Session

from services.ingest import store
from services.ingest.adapters.fields import record_status
from services.ingest.adapters.records import Outcome, SourceRecord, make_record
from services.ingest.adapters.redcap import DetNotice, map_records
from services.ingest.bounds import out_of_bounds
from services.ingest.intake import accept_records
from services.ingest.models import UNMAPPABLE, RedcapTrigger
from services.ingest.runtime import IngestRuntime
from services.ingest.sources import Source, SourceKind
from shared.events import InboundType
from shared.kafka import BrokerUnavailable

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=1)
RECORD_TYPES = ("enrollment", "dose", "lab", "ae", "transfusion", "sample")


class RedcapError(Exception):
    """The REDCap API refused or failed the pull; retried later."""


class RedcapSync:
    def __init__(self, *, runtime: IngestRuntime, client: httpx.AsyncClient) -> None:
        self._runtime = runtime
        self._client = client
        self.sources = [s for s in runtime.sources.values() if s.config.kind == SourceKind.REDCAP]
        self.wake = asyncio.Event()

    async def store_trigger(self, source: Source, notice: DetNotice, now: datetime) -> int:
        def write() -> int:
            with Session(self._runtime.engine) as session, session.begin():
                trigger = store.add_trigger(
                    session,
                    source_id=source.id,
                    record=notice.record,
                    instrument=notice.instrument,
                    event=notice.event,
                    now=now,
                )
                assert trigger.id is not None
                return trigger.id

        trigger_id = await asyncio.to_thread(write)
        self.wake.set()
        return trigger_id

    async def pull(self, source: Source, *, record: str | None = None, since: datetime | None = None) -> list[Any]:
        redcap = source.config.redcap
        assert redcap is not None and source.redcap_token is not None
        form: dict[str, str] = {
            "token": source.redcap_token.get_secret_value(),
            "content": "record",
            "action": "export",
            "format": "json",
            "type": "flat",
            "rawOrLabel": "raw",
            "exportDataAccessGroups": "true",
            "returnFormat": "json",
        }
        if record is not None:
            form["records[0]"] = record
        if since is not None:  # REDCap reads it in the server's local time
            form["dateRangeBegin"] = since.astimezone(source.config.zone).strftime("%Y-%m-%d %H:%M:%S")
        try:
            response = await self._client.post(redcap.api_url, data=form, timeout=30.0)
        except httpx.HTTPError as exc:
            raise RedcapError(f"REDCap API unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise RedcapError(f"REDCap API answered {response.status_code}: {response.text[:200]}")
        try:
            rows = response.json()
        except (ValueError, RecursionError) as exc:
            raise RedcapError("REDCap API answered something that is not JSON") from exc
        if not isinstance(rows, list):
            raise RedcapError(f"REDCap API answered {str(rows)[:200]}")
        return rows

    async def run_once(self) -> None:
        for source in self.sources:
            await self.process_triggers(source)
            await self.reconcile_if_due(source)
        pending = await asyncio.to_thread(self._pending)
        self._runtime.metrics.redcap_pending.set(pending)

    def _pending(self) -> int:
        with Session(self._runtime.engine) as session:
            return store.pending_triggers(session)

    async def process_triggers(self, source: Source) -> int:
        now = self._runtime.clock.now()

        def due() -> list[RedcapTrigger]:
            with Session(self._runtime.engine) as session:
                return store.due_triggers(session, source_id=source.id, now=now)

        processed = 0
        for trigger in await asyncio.to_thread(due):
            try:
                unmappable = await self._process(source, trigger)
            except (RedcapError, BrokerUnavailable) as exc:
                self._runtime.metrics.redcap_pulls.labels(kind="trigger", outcome="failed").inc()
                log.warning("REDCap trigger %s of source %s failed: %s", trigger.id, source.id, type(exc).__name__)
                await asyncio.to_thread(self._finish, trigger.id, error=_describe(exc))
                continue
            self._runtime.metrics.redcap_pulls.labels(kind="trigger", outcome="ok").inc()
            if unmappable:
                self._count_unmappable(source, "trigger", unmappable)
            await asyncio.to_thread(self._finish, trigger.id, error=None, unmappable=_summary(unmappable))
            processed += 1
        return processed

    async def _process(self, source: Source, trigger: RedcapTrigger) -> list[dict[str, Any]]:
        """Publish what maps of the triggered record; return the forms that could not be mapped."""
        study = _study(source)
        rows = await self.pull(source, record=trigger.record)
        received_at = self._runtime.clock.now()
        if not rows:
            records = await asyncio.to_thread(self._retractions, source, study, trigger.record)
            await accept_records(self._runtime, source.id, records, received_at)
            return []
        mapped = _bounded(map_records(rows, source=source.config, study=study))
        await accept_records(self._runtime, source.id, mapped.records, received_at)
        return mapped.errors

    def _count_unmappable(self, source: Source, kind: str, errors: list[dict[str, Any]]) -> None:
        self._runtime.metrics.redcap_unmappable.labels(kind=kind).inc(len(errors))
        log.warning("REDCap source %s: %d form(s) could not be mapped: %s", source.id, len(errors), _summary(errors))

    def _retractions(self, source: Source, study: str, subject: str) -> list[SourceRecord]:
        """The record is gone from REDCap: every record we published for it becomes a 'deleted' status event."""
        with Session(self._runtime.engine) as session:
            known = store.subject_records(session, source_id=source.id, trial=study, subject=subject)
        retractions = []
        for row in known:
            if row.retracted or row.record_type not in RECORD_TYPES:
                continue
            data = record_status(row.record_type, row.record_id, "deleted", "record no longer exists in REDCap")  # type: ignore[arg-type]
            retractions.append(
                make_record(
                    type_=InboundType.STATUS,
                    data=data,
                    study=row.trial,
                    site=row.site,
                    subject=row.subject,
                    record_key=row.record_key,
                )
            )
        return retractions

    def _finish(self, trigger_id: int | None, *, error: str | None, unmappable: str | None = None) -> None:
        now = self._runtime.clock.now()
        with Session(self._runtime.engine) as session, session.begin():
            trigger = session.get(RedcapTrigger, trigger_id)
            if trigger is None:
                return
            trigger.attempts += 1
            if unmappable is not None:
                trigger.state, trigger.processed_at, trigger.last_error = UNMAPPABLE, now, unmappable[:2000]
            elif error is None:
                trigger.state, trigger.processed_at, trigger.last_error = "done", now, None
            else:
                backoff = min(timedelta(seconds=30 * 2 ** min(trigger.attempts - 1, 10)), MAX_BACKOFF)
                trigger.last_error, trigger.next_attempt_at = error[:2000], now + backoff
            session.add(trigger)

    async def reconcile_if_due(self, source: Source) -> bool:
        redcap = source.config.redcap
        assert redcap is not None
        now = self._runtime.clock.now()

        def cursor() -> tuple[datetime, datetime] | None:
            with Session(self._runtime.engine) as session:
                found = store.get_cursor(session, source_id=source.id)
                return (found.reconciled_from, found.last_run_at) if found else None

        last = await asyncio.to_thread(cursor)
        if last is not None and now - last[1] < timedelta(minutes=redcap.reconcile_minutes):
            return False
        since = last[0] - timedelta(minutes=redcap.overlap_minutes) if last is not None else None
        try:
            rows = await self.pull(source, since=since)
            mapped = _bounded(map_records(rows, source=source.config, study=_study(source)))
            await accept_records(self._runtime, source.id, mapped.records, self._runtime.clock.now(), backfill=True)
        except (RedcapError, BrokerUnavailable) as exc:
            self._runtime.metrics.redcap_pulls.labels(kind="reconcile", outcome="failed").inc()
            log.warning("REDCap reconciliation of source %s failed: %s", source.id, _describe(exc))
            return False
        self._runtime.metrics.redcap_pulls.labels(kind="reconcile", outcome="ok").inc()
        if mapped.errors:
            self._count_unmappable(source, "reconcile", mapped.errors)

        def advance() -> None:
            with Session(self._runtime.engine) as session, session.begin():
                for error in mapped.errors:
                    store.add_unmappable(
                        session,
                        source_id=source.id,
                        record=str(error["record"])[:100],
                        instrument=str(error["instrument"])[:100],
                        event=str(error["event"])[:100],
                        error=_summary([error]) or "",
                        now=now,
                    )
                store.set_cursor(session, source_id=source.id, reconciled_from=now, now=now)

        await asyncio.to_thread(advance)
        return True

    async def run(self, stop: asyncio.Event, poll_seconds: float) -> None:
        while not stop.is_set():
            await self.run_once()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self.wake), timeout=poll_seconds)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _study(source: Source) -> str:
    assert source.config.trial is not None
    return source.config.trial


def _summary(errors: list[dict[str, Any]]) -> str | None:
    """Which record, event and form could not be mapped, and why: what a person needs to correct it in REDCap."""
    if not errors:
        return None
    return "; ".join(
        f"record {e['record']!r} event {e['event']!r} form {e['instrument']!r} field {e['loc'][-1]!r}: {e['msg']}"
        for e in errors
    )


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _bounded(outcome: Outcome) -> Outcome:
    """Records with a number safety could not process are kept back as unmappable forms, like any form the map
    cannot read: the site must correct them in REDCap (a pull has no sender to answer 422 to)."""
    kept: list[SourceRecord] = []
    for record in outcome.records:
        problems = out_of_bounds(record.event.data)
        if not problems:
            kept.append(record)
            continue
        header = record.event.header
        for problem in problems:
            outcome.errors.append(
                {"loc": problem["loc"], "msg": problem["msg"], "record": header.subject, "event": "", "instrument": ""}
            )
    outcome.records = kept
    return outcome
