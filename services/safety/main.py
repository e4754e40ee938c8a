"""Safety's composition root: protocol, engine, consumer of clinical events, outbox of signals, sweep."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.safety import routes, routes_expedited, routes_listings, routes_response
from services.safety.clinical_events import open_batch
from services.safety.metrics import SafetyStateCollector
from services.safety.settings import SafetySettings
from services.safety.sweep import SweepJob, SweepMetrics
from shared.audit import anchor_audit
from shared.auth import TokenAuthenticator
from shared.clock import Clock, SystemClock
from shared.consumer_service import ConsumerService, ConsumerSpec
from shared.db import make_engine
from shared.events import CLINICAL_ADAPTER, ClinicalEnvelope
from shared.http import install_common
from shared.lanes import bulk_topic, routine_topic
from shared.protocol import load_protocol
from shared.schema_version import SHARED, Component, prepare_database
from shared.tracing import Tracing, build_tracing, exporter_enabled, instrument_app

SERVICE = "safety"
MIGRATIONS = Component(SERVICE, "services.safety:migrations")


def create_app(
    settings: SafetySettings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    own_tracing = tracing is None
    tracing = tracing or build_tracing(SERVICE, os.environ)
    protocol = load_protocol(settings.protocol_path)
    engine = make_engine(settings.database_url_for(SERVICE))
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=settings.auto_migrate)
    spec: ConsumerSpec[ClinicalEnvelope] = ConsumerSpec(
        service=SERVICE,
        group_id=settings.safety_group_id,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        consume_topic=settings.clinical_topic,
        produce_topics=[settings.signals_topic, routine_topic(settings.signals_topic)],
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=open_batch(protocol, settings.signals_topic),
        batched=True,
        failpoint=settings.safety_failpoint,
        bulk_topic=bulk_topic(settings.clinical_topic),
        tuning=settings.consumer_tuning(),
    )
    clock = clock or SystemClock()
    audit = anchor_audit(
        engine,
        service=SERVICE,
        key=settings.audit_signing_key(),
        directory=settings.audit_checkpoint_directory(),
        interval_seconds=settings.audit_checkpoint_seconds,
        clock=clock,
        registry=registry,
    )
    recording = not own_tracing or exporter_enabled(os.environ)  # an injected provider records (tests' exporters)
    consumer = ConsumerService(
        spec, engine=engine, clock=clock, registry=registry, tracer=tracing.tracer if recording else None
    )
    registry.register(SafetyStateCollector(engine))
    sweep = SweepJob(
        engine=engine,
        protocol=protocol,
        clock=clock,
        interval_seconds=settings.safety_sweep_seconds,
        signals_topic=settings.signals_topic,
        wake_relay=consumer.relay.wake,
        metrics=SweepMetrics.create(registry),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with consumer.running(sweep, audit.run):
            yield
        engine.dispose()
        if own_tracing:
            tracing.shutdown()

    app = FastAPI(title="Sentinel safety", version="0.1.0", lifespan=lifespan)
    app.state.consumer = consumer
    app.state.engine = engine
    app.state.protocol = protocol
    app.state.clock = clock
    app.state.signals_topic = settings.signals_topic
    app.state.authenticator = TokenAuthenticator(settings.api_tokens)
    install_common(
        app,
        registry=registry,
        service=SERVICE,
        readiness=consumer.readiness,
        liveness=consumer.alive,
        database=engine,
    )
    app.include_router(routes.router)
    app.include_router(routes_expedited.router)
    app.include_router(routes_listings.router)
    app.include_router(routes_response.router)
    instrument_app(app, tracing)
    return app
