"""The W3C trace context of each request when ingest records no spans (no exporter configured).

Spans nobody exports still cost: the FastAPI instrumentation and a producer span per request were about a third
of a single-event post's CPU (profiled). Without an exporter ingest keeps what those spans gave for free: each
request runs in a trace context (the sender's `traceparent` continued, or a new trace), so its log lines carry
`trace_id`/`span_id` and the records it publishes carry `traceparent`, and safety and notify (which may export)
continue the same trace. With an exporter (`OTEL_*`, see shared.tracing) the full instrumentation runs instead.
"""

from __future__ import annotations

import random

from opentelemetry import context as otel_context
from opentelemetry.trace import (
    INVALID_SPAN_ID,
    INVALID_TRACE_ID,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.tracing import context_from_traceparent


class TraceContextOnly:
    """A plain ASGI middleware: the request's trace context as a non-recording span, nothing else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(set_span_in_context(NonRecordingSpan(request_context(_traceparent(scope)))))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


def request_context(traceparent: str | None) -> SpanContext:
    """A new span id in the sender's trace (its sampling flag kept), or in a new trace, sampled so that a
    service downstream that exports records it (as it would if ingest had made real spans)."""
    parent = get_current_span(context_from_traceparent(traceparent)).get_span_context() if traceparent else None
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


def _traceparent(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"traceparent":
            return bytes(value).decode("latin-1")
    return None
