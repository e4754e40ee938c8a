"""Notify's composition root: consumer of signals, timer runner, delivery dispatcher, officer API."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notify import routes
from services.notify.channels import OutgoingMessage
from services.notify.channels.email import MailChannel, SmtpChannel, SmtpConfig
from services.notify.channels.webhook import WebhookChannel
from services.notify.dead_letter_consumer import DeadLetterWatch
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.escalation import webhook_names
from services.notify.metrics import DeadLetterMetrics, ResponseMetrics, StateCollector, TimerMetrics
from services.notify.runtime import NotifyRuntime
from services.notify.settings import NotifySettings
from services.notify.signal_batch import open_batch
from services.notify.timers import TimerRunner
from shared.audit import anchor_audit
from shared.auth import TokenAuthenticator
from shared.clock import Clock, SystemClock
from shared.consumer_service import ConsumerService, ConsumerSpec
from shared.db import make_engine
from shared.events import SIGNAL_ADAPTER, SignalEnvelope
from shared.http import install_common
from shared.lanes import bulk_topic, routine_topic
from shared.protocol import load_protocol
from shared.schema_version import SHARED, Component, prepare_database
from shared.topics import dead_letter_topic
from shared.tracing import Tracing, build_tracing, exporter_enabled, instrument_app

SERVICE = "notify"
log = logging.getLogger(__name__)
MIGRATIONS = Component(SERVICE, "services.notify:migrations")


def smtp_channel(settings: NotifySettings) -> SmtpChannel:
    return SmtpChannel(
        SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
            ssl=settings.smtp_ssl,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout_seconds,
        )
    )


def _crash_after_handoff(message: OutgoingMessage) -> None:
    """Failpoint for the crash tests: die like kill -9 after the SMTP server took a mail, before the commit."""
    log.critical("failpoint: SIGKILL after handing over delivery %s", message.delivery_id)
    os.kill(os.getpid(), signal.SIGKILL)


def create_app(
    settings: NotifySettings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    channel: MailChannel | None = None,
    webhook: WebhookChannel | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    own_tracing = tracing is None
    tracing = tracing or build_tracing(SERVICE, os.environ)
    clock = clock or SystemClock()
    protocol = load_protocol(settings.protocol_path)
    missing = sorted(webhook_names(protocol) - set(settings.chat_webhooks))
    if missing:
        raise ValueError(f"the protocol pages webhooks that SENTINEL_CHAT_WEBHOOKS does not configure: {missing}")
    engine = make_engine(settings.database_url_for(SERVICE))
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=settings.auto_migrate)
    audit = anchor_audit(
        engine,
        service=SERVICE,
        key=settings.audit_signing_key(),
        directory=settings.audit_checkpoint_directory(),
        interval_seconds=settings.audit_checkpoint_seconds,
        clock=clock,
        registry=registry,
    )
    timers = TimerRunner(
        engine=engine,
        protocol=protocol,
        clock=clock,
        metrics=TimerMetrics.create(registry),
        poll_seconds=settings.timer_poll_seconds,
        late_after=timedelta(seconds=settings.timer_late_after_seconds),
        console_url=settings.console_url,
    )
    dispatcher = DeliveryDispatcher(
        engine=engine,
        channel=channel or smtp_channel(settings),
        webhook=webhook
        or WebhookChannel(settings.webhook_targets(), clock=clock, timeout=settings.webhook_timeout_seconds),
        clock=clock,
        metrics=DeliveryMetrics.create(registry),
        max_attempts=settings.delivery_max_attempts,
        base_backoff_seconds=settings.delivery_base_backoff_seconds,
        poll_seconds=settings.dispatch_poll_seconds,
        on_failover=timers.wake,
        concurrency=settings.dispatch_concurrency,
        batch_size=settings.dispatch_batch_size,
        digest_window=timedelta(seconds=settings.digest_window_seconds),
        lease=timedelta(seconds=settings.delivery_lease_seconds),
        heartbeat_seconds=settings.delivery_lease_seconds / 3,
        after_handoff=_crash_after_handoff if settings.notify_failpoint == "crash_after_handoff" else None,
        tracer=tracing.tracer,
    )
    timers.on_fired = dispatcher.wake
    registry.register(StateCollector(engine, clock))
    spec: ConsumerSpec[SignalEnvelope] = ConsumerSpec(
        service=SERVICE,
        group_id=settings.notify_group_id,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        consume_topic=settings.signals_topic,
        bulk_topic=routine_topic(settings.signals_topic),  # drained when the signals topic has nothing waiting
        produce_topics=[],
        parse=SIGNAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=open_batch(protocol, settings.console_url),
        batched=True,
        tuning=settings.consumer_tuning(),
    )
    recording = not own_tracing or exporter_enabled(os.environ)  # an injected provider records (tests' exporters)
    consumer = ConsumerService(
        spec,
        engine=engine,
        clock=clock,
        registry=registry,
        on_committed=dispatcher.wake,
        tracer=tracing.tracer if recording else None,
    )
    dead_letters = DeadLetterWatch(
        engine=engine,
        protocol=protocol,
        clock=clock,
        metrics=DeadLetterMetrics.create(registry),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{settings.notify_group_id}-dead-letters",
        # safety dead-letters a backfill's record to the bulk lane's own DLQ (a DLQ per source topic)
        topics=[
            dead_letter_topic(settings.clinical_topic),
            dead_letter_topic(bulk_topic(settings.clinical_topic)),
            dead_letter_topic(settings.signals_topic),
            dead_letter_topic(routine_topic(settings.signals_topic)),
        ],
        on_committed=dispatcher.wake,
    )

    def readiness() -> dict[str, bool]:
        return {**consumer.readiness(), "dead_letters": dead_letters.ready.is_set()}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with consumer.running(timers.run, dispatcher.run, dead_letters.run, audit.run):
            yield
        engine.dispose()
        if own_tracing:
            tracing.shutdown()

    app = FastAPI(title="Sentinel notify (officer API)", version="0.1.0", lifespan=lifespan)
    app.state.runtime = NotifyRuntime(
        engine=engine, clock=clock, protocol=protocol, metrics=ResponseMetrics.create(registry)
    )
    app.state.timers = timers
    app.state.dispatcher = dispatcher
    app.state.dead_letters = dead_letters
    app.state.authenticator = TokenAuthenticator(settings.api_tokens)
    install_common(
        app,
        registry=registry,
        service=SERVICE,
        readiness=readiness,
        liveness=consumer.alive,
        database=engine,
    )
    app.include_router(routes.router)
    instrument_app(app, tracing)
    return app
