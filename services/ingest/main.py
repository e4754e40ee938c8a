"""Ingest's composition root: settings, sources, engine, producer, metrics, routes and background jobs."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import event

from services.ingest import routes, routes_fhir, routes_odm, routes_redcap, routes_sdtm
from services.ingest.commit_queue import CommitQueue
from services.ingest.direct_route import DirectRoute
from services.ingest.intake import save_accepted
from services.ingest.producer import make_ingest_producer
from services.ingest.purge import run_purge
from services.ingest.rate_limit import RateLimiter
from services.ingest.record_claims import RecordClaims
from services.ingest.redcap_sync import RedcapSync
from services.ingest.replica_locks import ReplicaLocks
from services.ingest.runtime import IngestMetrics, IngestRuntime
from services.ingest.settings import IngestSettings
from services.ingest.sources import Source, bind_trial, canonical_sources, load_sources, merge_sources
from services.ingest.store import HeldReader
from services.ingest.trace_context import TraceContextOnly
from shared.clock import Clock, SystemClock
from shared.db import make_engine
from shared.http import install_common
from shared.kafka import ManagedProducer, Publisher, ensure_topics
from shared.lanes import bulk_topic
from shared.protocol import load_protocol
from shared.schema_version import SHARED, Component, prepare_database
from shared.tracing import Tracing, build_tracing, exporter_enabled, instrument_app

SERVICE = "ingest"
MIGRATIONS = Component(SERVICE, "services.ingest:migrations")


def build_sources(settings: IngestSettings, env: Mapping[str, str]) -> dict[str, Source]:
    """The sources file (if any) plus SENTINEL_WEBHOOK_SECRETS as canonical sources, each bound to the trial of
    the protocol safety runs (whatever ingest accepts, safety must be able to process); raises SourcesError."""
    from_file = load_sources(settings.sources_path, env) if settings.sources_path else {}
    merged = merge_sources(from_file, canonical_sources(settings.webhook_secrets))
    return bind_trial(merged, load_protocol(settings.protocol_path).trial_id)


def create_app(
    settings: IngestSettings,
    *,
    publisher: Publisher | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    env: Mapping[str, str] | None = None,
    redcap_transport: httpx.AsyncBaseTransport | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """Build the app; tests inject a publisher, clock, environment, REDCap transport and tracer provider."""
    env = os.environ if env is None else env
    sources = build_sources(settings, env)
    own_tracing = tracing is None
    recording = not own_tracing or exporter_enabled(env)  # an injected provider records (tests' exporters)
    tracing = tracing or build_tracing(SERVICE, env)
    registry = registry or CollectorRegistry()
    clock = clock or SystemClock()
    engine = make_engine(settings.database_url_for(SERVICE))
    if engine.dialect.name == "sqlite":  # before the first connection, so that every one of them has it
        event.listen(engine, "connect", partial(_checkpoint_every, pages=settings.sqlite_checkpoint_pages))
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=settings.auto_migrate)
    managed: ManagedProducer | None = None
    if publisher is None:
        managed = ManagedProducer(
            lambda: make_ingest_producer(settings),
            publish_timeout=settings.publish_timeout_seconds,
            tracer=tracing.tracer if recording else None,
        )
        publisher = managed
    runtime = IngestRuntime(
        settings=settings,
        sources=sources,
        engine=engine,
        publisher=publisher,
        clock=clock,
        metrics=IngestMetrics.create(registry),
        rate_limiter=RateLimiter(
            clock, {sid: s.config.rate_limit for sid, s in sources.items() if s.config.rate_limit is not None}
        ),
        commits=CommitQueue(engine, save_accepted),
        reader=HeldReader(engine),
        claims=RecordClaims(ReplicaLocks(engine) if engine.dialect.name == "postgresql" else None),
    )
    redcap_client = httpx.AsyncClient(transport=redcap_transport)
    redcap_sync = RedcapSync(runtime=runtime, client=redcap_client)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if managed is not None:
            tasks.append(asyncio.create_task(_connect(settings, managed, stop)))
        if settings.background_jobs:
            tasks.append(asyncio.create_task(run_purge(runtime, stop)))
            if redcap_sync.sources:
                tasks.append(asyncio.create_task(redcap_sync.run(stop, settings.redcap_poll_seconds)))
        # what startup built lives as long as the process: keep it out of every later collection's scan
        # (the collector walking it was 15-20% of a single-event post's CPU)
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await redcap_client.aclose()
            if managed is not None:
                await managed.close()
            runtime.reader.close()
            engine.dispose()
            if own_tracing:
                tracing.shutdown()
            gc.unfreeze()  # an app built again in this process (tests) must not pin this one's objects

    app = FastAPI(
        title="Sentinel ingest",
        version="0.2.0",
        description="Inbound clinical data from EDC systems: canonical JSON, FHIR R4, CDISC ODM 1.3, SDTM, REDCap.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looked up the global providers on every request (about 2% of a post's
        # CPU); ingest's spans come from `instrument_app` when it records, and nothing is exported otherwise
        telemetry=None if recording else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.redcap_sync = redcap_sync
    if not recording:  # with an exporter every request goes through the instrumented FastAPI stack
        _serve_events_directly(app, settings)
    install_common(
        app,
        registry=registry,
        service=SERVICE,
        readiness=lambda: {"broker": managed.connected.is_set() if managed else True},
        database=engine,
        retry_after=settings.retry_after_seconds,
    )
    for module in (routes, routes_fhir, routes_odm, routes_sdtm, routes_redcap):
        app.include_router(module.router)
    if recording:
        instrument_app(app, tracing)
    else:
        app.add_middleware(TraceContextOnly)
    return app


def _checkpoint_every(dbapi_connection: Any, _record: object, *, pages: int) -> None:
    """Checkpoint the WAL less often than SQLite's default: ingest's commits touch pages all over its idempotency
    indexes (keys are spread by subject), so at 1,000 pages almost every commit also copied the WAL back into the
    database file; a larger WAL copies each often-written page once per checkpoint (commit path 26 -> 21 us per
    event of a 100-event post, measured alone). Durability is the WAL's fsync at each commit, unchanged."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")
    cursor.close()


def _serve_events_directly(app: FastAPI, settings: IngestSettings) -> None:
    """The canonical webhook route without FastAPI's per-request layers (see direct_route); added before the
    common middleware, so it runs inside the request counter and the trace context."""
    route = next(r for r in routes.router.routes if getattr(r, "path", None) == routes.EVENTS_PATH)
    prefix, suffix = routes.EVENTS_PATH.split("{source_id}")
    app.add_middleware(
        DirectRoute,
        route=route,
        endpoint=routes.post_events,
        prefix=prefix,
        suffix=suffix,
        id_pattern=routes.SOURCE_ID_PATTERN,
        retry_after=settings.retry_after_seconds,
    )


async def _connect(settings: IngestSettings, producer: ManagedProducer, stop: asyncio.Event) -> None:
    await producer.connect(stop)
    topics = [settings.clinical_topic, bulk_topic(settings.clinical_topic)]
    await ensure_topics(settings.kafka_bootstrap_servers, topics)
