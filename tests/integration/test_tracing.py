"""One SAE is one trace: the webhook's span, the publish to the clinical topic, safety's processing, the
relay's publish of the signal from the outbox, notify's processing and each mail all share one trace id.

The three apps run in this process on the real broker and a real SMTP server, each with its own tracer
provider writing to one in-memory exporter (as an OTLP collector would receive them from three processes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter as Exporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import new_webhook_secret, scenario_events
from services.ingest.main import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.notify.main import create_app as notify_app
from services.notify.models import Delivery
from services.notify.settings import NotifySettings
from services.safety.main import create_app as safety_app
from services.safety.settings import SafetySettings
from shared.db import make_engine
from shared.outbox import OutboxMessage
from shared.tracing import Tracing, build_tracing
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.polling import wait_for

pytestmark = pytest.mark.integration
TRIAL = "NCT07212335"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@contextmanager
def running_apps(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch, exporter: Exporter | None
) -> Iterator[tuple[TestClient, MailCatcher, str]]:
    """Ingest, safety and notify on the broker; each records into `exporter`, or (None) records nothing, as
    without OTEL_* variables."""
    secret = new_webhook_secret()
    env = {
        "SENTINEL_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SENTINEL_CLINICAL_TOPIC": f"{topic_prefix}.clinical",
        "SENTINEL_SIGNALS_TOPIC": f"{topic_prefix}.signals",
        "SENTINEL_SAFETY_GROUP_ID": f"{topic_prefix}-safety",
        "SENTINEL_NOTIFY_GROUP_ID": f"{topic_prefix}-notify",
        "SENTINEL_VAR_DIR": str(tmp_path / "var"),
        "SENTINEL_WEBHOOK_SECRETS": f'{{"edc": "{secret}"}}',
        "SENTINEL_DISPATCH_POLL_SECONDS": "0.2",
    }
    for name in [n for n in os.environ if n.startswith(("SENTINEL_", "OTEL_"))]:
        if name != "SENTINEL_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    with MailCatcher(tmp_path / "mail", port=0) as catcher, ExitStack() as running:
        env["SENTINEL_SMTP_PORT"] = str(catcher.port)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

        def tracing(service: str) -> Tracing | None:
            if exporter is None:
                return None
            return build_tracing(service, {}, processors=[SimpleSpanProcessor(exporter)])

        clients = [
            TestClient(ingest_app(IngestSettings(), registry=CollectorRegistry(), tracing=tracing("ingest"))),
            TestClient(safety_app(SafetySettings(), registry=CollectorRegistry(), tracing=tracing("safety"))),
            TestClient(notify_app(NotifySettings(), registry=CollectorRegistry(), tracing=tracing("notify"))),
        ]
        for client in clients:
            running.enter_context(client)
        for client in clients:
            wait_for(lambda c=client: c.get("/readyz").status_code == 200, timeout=60, what="service ready")  # type: ignore[misc]
        yield clients[0], catcher, secret


@pytest.fixture
def apps(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_prefix: str,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TestClient, MailCatcher, str]]:
    with running_apps(tmp_path, kafka_bootstrap, topic_prefix, monkeypatch, exporter) as running:
        yield running


def named(spans: list[ReadableSpan], suffix: str, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.name.endswith(suffix) and s.kind == kind]


def test_one_sae_is_one_trace_from_webhook_to_mail(
    apps: tuple[TestClient, MailCatcher, str], exporter: InMemorySpanExporter
) -> None:
    ingest, catcher, secret = apps
    now = datetime.now(UTC)
    sae = scenario_events(TRIAL, now)[-1]  # the serious version of the AE
    body = json.dumps(sae).encode()
    headers = signature_headers(WebhookSecret.parse(secret), "msg_trace_1", int(now.timestamp()), body)
    response = ingest.post(
        "/v1/sources/edc/events", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 202, response.text

    wait_for(lambda: len(catcher.messages()) >= 2, timeout=60, what="the SAE mails to both contacts")
    wait_for(
        lambda: len(named(list(exporter.get_finished_spans()), "send", SpanKind.CLIENT)) >= 2,
        timeout=10,
        what="the two mail spans",
    )
    spans = list(exporter.get_finished_spans())
    webhook = [s for s in spans if s.kind == SpanKind.SERVER and "/v1/sources/{source_id}/events" in s.name]
    assert len(webhook) == 1, [s.name for s in spans]
    trace_id = webhook[0].context.trace_id

    chain = {
        "ingest publishes to the clinical topic": named(spans, ".clinical publish", SpanKind.PRODUCER),
        "safety processes it": named(spans, ".clinical process", SpanKind.CONSUMER),
        "safety's outbox publishes the signal": named(spans, ".signals publish", SpanKind.PRODUCER),
        "notify processes the signal": named(spans, ".signals process", SpanKind.CONSUMER),
        "notify sends the mails": named(spans, "email send", SpanKind.CLIENT),
    }
    for step, found in chain.items():
        assert found, f"no span for: {step}"
        assert {s.context.trace_id for s in found} == {trace_id}, f"{step}: not in the webhook's trace"
    services = {s.resource.attributes["service.name"] for s in spans if s.context.trace_id == trace_id}
    assert services == {"sentinel-ingest", "sentinel-safety", "sentinel-notify"}
    # Each step is the child of the one before it, across the broker and the database.
    by_id = {s.context.span_id: s for s in spans}
    mail = chain["notify sends the mails"][0]
    ancestry = []
    current: ReadableSpan | None = mail
    while current is not None:
        ancestry.append(current.name)
        current = by_id.get(current.parent.span_id) if current.parent is not None else None
    assert ancestry[-1] == webhook[0].name, ancestry
    assert [n.split(" ")[-1] for n in ancestry[:5]] == ["send", "process", "publish", "process", "publish"], ancestry


def test_without_an_exporter_the_senders_trace_still_reaches_the_mail(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No OTEL_* variables: no service makes spans, but the sender's `traceparent` goes on through ingest's
    record, safety's processing and outbox row and notify's delivery (each with a span id of its own), so logs
    and any later exporting service still follow one SAE by one trace id."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    sender = f"00-{trace_id}-00f067aa0ba902b7-01"
    with running_apps(tmp_path, kafka_bootstrap, topic_prefix, monkeypatch, None) as (ingest, catcher, secret):
        now = datetime.now(UTC)
        body = json.dumps(scenario_events(TRIAL, now)[-1]).encode()
        headers = signature_headers(WebhookSecret.parse(secret), "msg_trace_2", int(now.timestamp()), body)
        response = ingest.post(
            "/v1/sources/edc/events",
            content=body,
            headers={**headers, "content-type": "application/json", "traceparent": sender},
        )
        assert response.status_code == 202, response.text
        wait_for(lambda: len(catcher.messages()) >= 2, timeout=60, what="the SAE mails to both contacts")
    var = tmp_path / "var"
    with Session(make_engine(f"sqlite:///{var / 'safety.db'}")) as session:
        signals = [row for row in session.exec(select(OutboxMessage)) if b"sae.detected" in row.value]
    with Session(make_engine(f"sqlite:///{var / 'notify.db'}")) as session:
        deliveries = list(session.exec(select(Delivery)))
    assert signals and deliveries
    contexts = [row.trace_context for row in [*signals, *deliveries]]
    assert all(c is not None and c.split("-")[1] == trace_id for c in contexts), contexts
    assert all(c is not None and c.split("-")[2] != sender.split("-")[2] for c in contexts), "new span ids"
