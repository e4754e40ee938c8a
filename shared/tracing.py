"""OpenTelemetry tracing: one SAE is one trace, from the webhook to the mail.

The W3C trace context travels where the work travels:
- HTTP: the FastAPI instrumentation opens the server span of each request (`instrument_app`);
- Kafka: each record carries `traceparent` (and `tracestate`) headers, written by the publishing span
  (`publishing`) and read by the consuming span (`consuming`);
- the database: outbox rows and notify's deliveries keep the `traceparent` of the span that wrote them
  (`current_traceparent` as their column default), so the relay's publish and the later mail continue the
  same trace after a commit, a restart or on another replica (`resumed`).

Spans leave the process only when an exporter is configured by the standard variables:
`OTEL_TRACES_EXPORTER=otlp`, or an `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, with
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`... read by the SDK.
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keep everything local. Nothing is set globally: each app
gets its provider. Without an exporter the per-event paths make no spans, only their context (`continued_context`):
a consumer span, a producer span and a log line bound to them cost 90 us an event in safety, a quarter of its CPU,
for spans nobody receives; the trace context still flows, so log lines carry trace ids and a downstream service that
exports continues the same trace.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    INVALID_SPAN_ID,
    INVALID_TRACE_ID,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.logs import bound_event, event_log_fields, parsed_event_log_fields

log = structlog.stdlib.get_logger("sentinel.events")  # the one logger of per-event lines, in every service
PROPAGATOR = TraceContextTextMapPropagator()  # stateless: W3C traceparent/tracestate only
CONTEXT_HEADERS = frozenset(PROPAGATOR.fields)
UNTRACED_PATHS = "healthz,readyz,metrics"


class Record(Protocol):
    """What a consumer span needs of a consumed record (shared.kafka.ConsumedMessage has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Tracing:
    """A service's tracer provider (and its tracer); shut down at the end to flush the exporter."""

    provider: TracerProvider

    @property
    def tracer(self) -> Tracer:
        return self.provider.get_tracer("sentinel")

    def shutdown(self) -> None:
        self.provider.shutdown()


def exporter_enabled(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter in ("", "otlp"):
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return exporter == "otlp" or bool(endpoint)
    if exporter == "none":
        return False
    raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r} is not supported here: use 'otlp' or 'none'")


def build_tracing(service: str, env: Mapping[str, str], *, processors: Sequence[SpanProcessor] = ()) -> Tracing:
    """The provider for one service; the OTLP/HTTP exporter only when the environment asks for one."""
    name = env.get("OTEL_SERVICE_NAME") or f"sentinel-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name, "service.namespace": "sentinel"}))
    for processor in processors:
        provider.add_span_processor(processor)
    if exporter_enabled(env):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)


def instrument_app(app: FastAPI, tracing: Tracing) -> None:
    """Server spans per request, named by route template; probes and scrapes are not traced."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracing.provider, excluded_urls=UNTRACED_PATHS)


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent` (for a database column), or None outside any span."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> Context | None:
    return PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None


@contextmanager
def continuing(traceparent: str | None) -> Iterator[None]:
    """Make the span a `traceparent` names current (what is written meanwhile carries that trace on)."""
    context = context_from_traceparent(traceparent)
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def context_from_headers(headers: Sequence[tuple[str, bytes]]) -> Context | None:
    carrier = {k: v.decode("latin-1") for k, v in headers if k in CONTEXT_HEADERS and v is not None}
    return PROPAGATOR.extract(carrier) if carrier else None


def with_trace_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The headers with the current trace context in place of any they carried."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    kept = [(k, v) for k, v in headers if k not in CONTEXT_HEADERS]
    return kept + [(k, v.encode("latin-1")) for k, v in carrier.items()]


@contextmanager
def resumed(traceparent: str | None) -> Iterator[None]:
    """Run the block inside the trace a stored `traceparent` names (nothing changes without one)."""
    parent = context_from_traceparent(traceparent)
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def span(
    tracer: Tracer | None, name: str, *, kind: SpanKind, attributes: Mapping[str, str] | None = None
) -> Iterator[None]:
    """A span when the service has a tracer; without one (unit tests) the current context simply goes on."""
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes or {})):
        yield


def envelope_attributes(value: bytes) -> dict[str, str]:
    """The CloudEvent's identifying attributes from a record's bytes; empty for bytes that are not one."""
    try:
        parsed = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    return event_log_fields(parsed)


def messaging_attributes(topic: str, fields: Mapping[str, str]) -> dict[str, str]:
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic}
    if "event_id" in fields:
        attributes["messaging.message.id"] = fields["event_id"]
    attributes.update({f"sentinel.{k}": v for k, v in fields.items() if k != "event_id"})
    return attributes


@contextmanager
def publishing(tracer: Tracer | None, topic: str, value: bytes) -> Iterator[dict[str, str]]:
    """The producer span of one record; yields the envelope's log fields."""
    fields = envelope_attributes(value)
    with span(tracer, f"{topic} publish", kind=SpanKind.PRODUCER, attributes=messaging_attributes(topic, fields)):
        yield fields


RecordScope = Callable[[Record, object], AbstractContextManager[None]]
"""What a consumer runs each record inside (its span and log fields), given the record and what it was parsed into
(None: not parsed, its fields are read from its bytes); the batch handler enters it per record."""


def consuming(tracer: Tracer | None, *, consumer: str) -> RecordScope:
    """The scope of one consumed record: the record's trace continued (a consumer span when the service records
    spans, else only a span context in the same trace), so the outbox rows it writes carry that trace on; the
    event's ids bound to every log line written meanwhile. Entered per record inside the batch's transaction;
    the handler logs what it committed, once per batch (`shared.processing`)."""

    @contextmanager
    def scope(message: Record, parsed: object = None) -> Iterator[None]:
        fields = envelope_attributes(message.value) if parsed is None else parsed_event_log_fields(parsed)
        parent = context_from_headers(message.headers)
        with bound_event(consumer=consumer, **fields):
            if tracer is None:
                with _in_context_of(parent):
                    try:
                        yield
                    except Exception as exc:
                        _not_handled(message, exc)
                        raise
                return
            attributes = messaging_attributes(message.topic, fields)
            attributes.update(
                {"messaging.kafka.partition": str(message.partition), "messaging.kafka.offset": str(message.offset)}
            )
            with tracer.start_as_current_span(
                f"{message.topic} process", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
            ) as current:
                try:
                    yield
                except Exception as exc:
                    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    _not_handled(message, exc)
                    raise

    return scope


def _not_handled(message: Record, exc: Exception) -> None:
    log.warning("event not handled", error=type(exc).__name__, topic=message.topic, offset=message.offset)


@contextmanager
def _in_context_of(parent: Context | None) -> Iterator[None]:
    """A non-recording span continuing `parent`'s trace is current for the block."""
    remote = get_current_span(parent).get_span_context() if parent is not None else None
    token = otel_context.attach(set_span_in_context(NonRecordingSpan(continued_context(remote))))
    try:
        yield
    finally:
        otel_context.detach(token)


def continued_context(parent: SpanContext | None) -> SpanContext:
    """What a span of ours would be without the span: a new span id in the parent's trace (its sampling flag
    kept), or in a new trace, sampled so that a service downstream that exports records it (as it would if this
    one had made real spans)."""
    if parent is not None and parent.is_valid:
        span_id = _new_id(64, INVALID_SPAN_ID)
        return SpanContext(parent.trace_id, span_id, is_remote=False, trace_flags=parent.trace_flags)
    return SpanContext(
        _new_id(128, INVALID_TRACE_ID),
        _new_id(64, INVALID_SPAN_ID),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def _new_id(bits: int, invalid: int) -> int:
    value = random.getrandbits(bits)  # ids need uniqueness, not secrecy (the OTel SDK's generator does the same)
    while value == invalid:
        value = random.getrandbits(bits)
    return value
