"""Trace context in Kafka headers and database columns; the CloudEvents content type on every record."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider

from shared.kafka import CLOUDEVENTS_CONTENT_TYPE, record_headers
from shared.tracing import (
    context_from_headers,
    current_traceparent,
    envelope_attributes,
    exporter_enabled,
    resumed,
)

tracer = TracerProvider().get_tracer("test")


def test_records_carry_the_cloudevents_content_type_and_the_current_trace() -> None:
    with tracer.start_as_current_span("publish") as span:
        headers = dict(record_headers([("error", b"x")]))
    assert headers["content-type"] == CLOUDEVENTS_CONTENT_TYPE == b"application/cloudevents+json"
    assert headers["error"] == b"x"
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert headers["traceparent"].decode().split("-")[1] == trace_id


def test_an_explicit_content_type_and_a_stale_traceparent_are_replaced_only_where_they_should_be() -> None:
    stale = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"
    with tracer.start_as_current_span("publish"):
        headers = record_headers([("content-type", b"application/json"), ("traceparent", stale)])
    assert [v for k, v in headers if k == "content-type"] == [b"application/json"]
    assert [v for k, v in headers if k == "traceparent"] != [stale]


def test_a_stored_traceparent_resumes_the_trace_after_a_commit() -> None:
    assert current_traceparent() is None
    with tracer.start_as_current_span("consume") as span:
        stored = current_traceparent()
    with resumed(stored), tracer.start_as_current_span("publish later") as later:
        pass
    assert later.get_span_context().trace_id == span.get_span_context().trace_id
    assert later.parent is not None and later.parent.span_id == span.get_span_context().span_id
    with resumed(None), tracer.start_as_current_span("unrelated") as unrelated:
        pass
    assert unrelated.get_span_context().trace_id != span.get_span_context().trace_id


def test_headers_without_a_context_start_a_new_trace() -> None:
    assert context_from_headers([("content-type", CLOUDEVENTS_CONTENT_TYPE)]) is None


def test_envelope_attributes_keep_ids_only_and_tolerate_garbage() -> None:
    value = b'{"id": "e1", "trialid": "T", "subject": "S", "source": "edc", "data": {"grade": 5}}'
    assert envelope_attributes(value) == {"event_id": "e1", "trial": "T", "subject": "S", "source": "edc"}
    assert envelope_attributes(b"\xff not json") == {}
    assert envelope_attributes(b"[1, 2]") == {}


def test_the_exporter_is_off_unless_the_standard_variables_ask_for_it() -> None:
    assert not exporter_enabled({})
    assert exporter_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert exporter_enabled({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not exporter_enabled({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not exporter_enabled({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
