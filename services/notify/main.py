"""Notify's composition root: consumer of signals, delivery dispatcher, officer API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notify import models, routes
from services.notify.channels.email import SmtpChannel, SmtpConfig
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics, MailChannel
from services.notify.runtime import NotifyRuntime
from services.notify.settings import NotifySettings
from services.notify.signals import apply_signal
from shared.auth import TokenAuthenticator
from shared.clock import Clock, SystemClock
from shared.consumer_service import ConsumerService, ConsumerSpec
from shared.db import create_tables, make_engine
from shared.events import SIGNAL_ADAPTER, SignalEnvelope
from shared.http import install_common
from shared.inbox import ProcessedEvent
from shared.outbox import OutboxMessage
from shared.protocol import load_protocol

SERVICE = "notify"


def smtp_channel(settings: NotifySettings) -> SmtpChannel:
    return SmtpChannel(
        SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
            ssl=settings.smtp_ssl,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout_seconds,
        )
    )


def create_app(
    settings: NotifySettings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    channel: MailChannel | None = None,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    clock = clock or SystemClock()
    protocol = load_protocol(settings.protocol_path)
    engine = make_engine(settings.database_url_for(SERVICE))
    create_tables(engine, [*models.TABLES, ProcessedEvent, OutboxMessage])
    dispatcher = DeliveryDispatcher(
        engine=engine,
        channel=channel or smtp_channel(settings),
        clock=clock,
        metrics=DeliveryMetrics.create(registry),
        max_attempts=settings.delivery_max_attempts,
        base_backoff_seconds=settings.delivery_base_backoff_seconds,
        poll_seconds=settings.dispatch_poll_seconds,
    )
    spec: ConsumerSpec[SignalEnvelope] = ConsumerSpec(
        service=SERVICE,
        group_id=settings.notify_group_id,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        consume_topic=settings.signals_topic,
        produce_topics=[],
        parse=SIGNAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=partial(apply_signal, protocol=protocol),
    )
    consumer = ConsumerService(spec, engine=engine, clock=clock, registry=registry, on_committed=dispatcher.wake)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with consumer.running(dispatcher.run):
            yield
        engine.dispose()

    app = FastAPI(title="Sentinel notify (officer API)", version="0.1.0", lifespan=lifespan)
    app.state.runtime = NotifyRuntime(engine=engine, clock=clock)
    app.state.authenticator = TokenAuthenticator(settings.api_tokens)
    install_common(app, registry=registry, service=SERVICE, readiness=consumer.readiness)
    app.include_router(routes.router)
    return app
