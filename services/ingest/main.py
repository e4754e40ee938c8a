"""Ingest's composition root: settings, engine, producer, metrics, routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ingest import models, routes
from services.ingest.runtime import IngestMetrics, IngestRuntime
from services.ingest.settings import IngestSettings
from shared.clock import Clock, SystemClock
from shared.db import create_tables, make_engine
from shared.http import install_common
from shared.kafka import ManagedProducer, Publisher, ensure_topics, make_producer

SERVICE = "ingest"


def create_app(
    settings: IngestSettings,
    *,
    publisher: Publisher | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the app; tests inject a publisher and clock, production gets a managed Kafka producer."""
    registry = registry or CollectorRegistry()
    engine = make_engine(settings.database_url_for(SERVICE))
    create_tables(engine, models.TABLES)
    managed: ManagedProducer | None = None
    if publisher is None:
        managed = ManagedProducer(
            lambda: make_producer(settings.kafka_bootstrap_servers, client_id="sentinel-ingest"),
            publish_timeout=settings.publish_timeout_seconds,
        )
        publisher = managed
    runtime = IngestRuntime(
        settings=settings,
        secrets=settings.parsed_secrets(),
        engine=engine,
        publisher=publisher,
        clock=clock or SystemClock(),
        metrics=IngestMetrics.create(registry),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if managed is not None:
            tasks.append(asyncio.create_task(_connect(settings, managed, stop)))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if managed is not None:
                await managed.close()
            engine.dispose()

    app = FastAPI(title="Sentinel ingest", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    install_common(
        app,
        registry=registry,
        service=SERVICE,
        readiness=lambda: {"broker": managed.connected.is_set() if managed else True},
    )
    app.include_router(routes.router)
    return app


async def _connect(settings: IngestSettings, producer: ManagedProducer, stop: asyncio.Event) -> None:
    await producer.connect(stop)
    await ensure_topics(settings.kafka_bootstrap_servers, [settings.clinical_topic])
