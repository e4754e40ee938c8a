"""Without an exporter ingest makes no spans, yet each request still runs in a trace context: the sender's trace
continued, or a new sampled one, so log lines carry trace ids and published records carry `traceparent`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.trace import TraceFlags, get_current_span

from services.ingest.trace_context import TraceContextOnly, request_context
from shared.tracing import current_traceparent

SENDER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def test_the_senders_trace_is_continued_with_a_span_id_of_our_own_and_its_sampling_flag() -> None:
    context = request_context(SENDER)
    assert format(context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(context.span_id, "016x") != "b7ad6b7169203331"
    assert context.trace_flags == TraceFlags.DEFAULT


def test_without_a_usable_traceparent_a_new_sampled_trace_starts() -> None:
    for header in (None, "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01"):
        context = request_context(header)
        assert context.is_valid and context.trace_flags.sampled
    assert request_context(None).trace_id != request_context(None).trace_id


def test_a_request_runs_in_that_context_and_records_would_carry_it() -> None:
    app = FastAPI()

    @app.get("/probe")
    async def probe() -> dict[str, str | None]:
        return {"traceparent": current_traceparent(), "recording": str(get_current_span().is_recording())}

    app.add_middleware(TraceContextOnly)
    client = TestClient(app)
    continued = client.get("/probe", headers={"traceparent": SENDER}).json()
    assert continued["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert continued["recording"] == "False"
    fresh = client.get("/probe").json()
    assert fresh["traceparent"] is not None and fresh["traceparent"].endswith("-01")
