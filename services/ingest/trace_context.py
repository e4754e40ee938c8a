"""The W3C trace context of each request when ingest records no spans (no exporter configured).

Spans nobody exports still cost: the FastAPI instrumentation and a producer span per request were about a third
of a single-event post's CPU (profiled). Without an exporter ingest keeps what those spans gave for free: each
request runs in a trace context (the sender's `traceparent` continued, or a new trace), so its log lines carry
`trace_id`/`span_id` and the records it publishes carry `traceparent`, and safety and notify (which may export)
continue the same trace. With an exporter (`OTEL_*`, see shared.tracing) the full instrumentation runs instead.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, get_current_span, set_span_in_context
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.tracing import context_from_traceparent, continued_context


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
    """A new span id in the sender's trace, or in a new trace (`shared.tracing.continued_context`)."""
    parent = get_current_span(context_from_traceparent(traceparent)).get_span_context() if traceparent else None
    return continued_context(parent)


def _traceparent(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"traceparent":
            return bytes(value).decode("latin-1")
    return None
