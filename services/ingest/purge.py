"""Delivery ids are kept for the retention (at least 4 days: senders retry for about 3), then forgotten."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlmodel import Session

from services.ingest import store
from services.ingest.runtime import IngestRuntime

log = logging.getLogger(__name__)


def purge_once(runtime: IngestRuntime) -> int:
    cutoff = runtime.clock.now() - timedelta(days=runtime.settings.delivery_retention_days)
    with Session(runtime.engine) as session, session.begin():
        purged = store.purge_deliveries(session, accepted_before=cutoff)
    runtime.metrics.purged.inc(purged)
    return purged


async def run_purge(runtime: IngestRuntime, stop: asyncio.Event) -> None:
    while not stop.is_set():
        purged = await asyncio.to_thread(purge_once, runtime)
        if purged:
            log.info("purged %d delivery ids older than %d days", purged, runtime.settings.delivery_retention_days)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=runtime.settings.purge_interval_seconds)
