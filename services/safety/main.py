"""Safety's composition root: protocol, engine, consumer of clinical events, outbox of signals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.safety import models, routes
from services.safety.clinical_events import apply_clinical_event
from services.safety.settings import SafetySettings
from shared.auth import TokenAuthenticator
from shared.clock import Clock, SystemClock
from shared.consumer_service import ConsumerService, ConsumerSpec
from shared.db import create_tables, make_engine
from shared.events import CLINICAL_ADAPTER, ClinicalEnvelope
from shared.http import install_common
from shared.inbox import ProcessedEvent
from shared.outbox import OutboxMessage
from shared.protocol import load_protocol

SERVICE = "safety"


def create_app(
    settings: SafetySettings, *, clock: Clock | None = None, registry: CollectorRegistry | None = None
) -> FastAPI:
    registry = registry or CollectorRegistry()
    protocol = load_protocol(settings.protocol_path)
    engine = make_engine(settings.database_url_for(SERVICE))
    create_tables(engine, [*models.TABLES, ProcessedEvent, OutboxMessage])
    spec: ConsumerSpec[ClinicalEnvelope] = ConsumerSpec(
        service=SERVICE,
        group_id=settings.safety_group_id,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        consume_topic=settings.clinical_topic,
        produce_topics=[settings.signals_topic],
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=partial(apply_clinical_event, protocol=protocol, signals_topic=settings.signals_topic),
        failpoint=settings.safety_failpoint,
    )
    consumer = ConsumerService(spec, engine=engine, clock=clock or SystemClock(), registry=registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with consumer.running():
            yield
        engine.dispose()

    app = FastAPI(title="Sentinel safety", version="0.1.0", lifespan=lifespan)
    app.state.consumer = consumer
    app.state.engine = engine
    app.state.authenticator = TokenAuthenticator(settings.api_tokens)
    install_common(app, registry=registry, service=SERVICE, readiness=consumer.readiness)
    app.include_router(routes.router)
    return app
