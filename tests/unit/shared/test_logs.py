"""Logs are one JSON object per line, with the current trace id and the bound event ids; no secrets, no
query strings, no client addresses."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from shared.logs import LineEncoder, RepeatLimiter, configure_logging, event_log_fields, parsed_event_log_fields
from shared.tracing import envelope_attributes
from tests.signal_factories import sae_detected
from tests.unit.safety.clinical import lab
from tests.unit.shared.conftest import lines


def test_standard_library_records_become_json_with_trace_and_event_ids(output: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    envelope = {"id": "ev-1", "type": "ae.reported", "trialid": "NCT07212335", "subject": "101-001", "data": {"x": 1}}
    with (
        tracer.start_as_current_span("work") as span,
        structlog.contextvars.bound_contextvars(**event_log_fields(envelope)),
    ):
        logging.getLogger("services.safety").warning("grading %s", "done")
    [line] = lines(output)
    assert line["event"] == "grading done"
    assert line["level"] == "warning" and line["logger"] == "services.safety"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert (line["event_id"], line["trial"], line["subject"], line["event_type"]) == (
        "ev-1",
        "NCT07212335",
        "101-001",
        "ae.reported",
    )
    assert "data" not in line and "x" not in json.dumps(line), "payload content never reaches a log line"
    assert str(line["time"]).endswith("Z")


def test_uvicorn_access_lines_are_structured_without_query_or_client(output: io.StringIO) -> None:
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "10.1.2.3:5555", "GET", "/v1/alerts?token=s3cret", "1.1", 200)
    [line] = lines(output)
    assert line["event"] == "http request"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/v1/alerts", 200)
    text = json.dumps(line)
    assert "s3cret" not in text and "10.1.2.3" not in text


def test_values_under_secret_names_are_redacted(output: io.StringIO) -> None:
    structlog.stdlib.get_logger("x").info("configured", api_token="abc", webhook_secret="whsec_x", source="edc")
    [line] = lines(output)
    assert line["api_token"] == "[redacted]" and line["webhook_secret"] == "[redacted]" and line["source"] == "edc"


def test_exceptions_are_one_line_of_json(output: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    [line] = lines(output)
    assert "ValueError: boom" in str(line["exception"])


def test_a_flood_of_one_library_message_is_limited_and_counted() -> None:
    now = [0.0]
    limiter = RepeatLimiter(per_window=2, window_seconds=10, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, ("node 1",), None)

    kept = [limiter.filter(record("Unable connect to %s")) for _ in range(100)]
    assert kept.count(True) == 2
    assert limiter.filter(record("another message %s")), "each template has its own budget"
    now[0] = 11.0
    after = record("Unable connect to %s")
    assert limiter.filter(after)
    assert after.suppressed_repeats == 98  # type: ignore[attr-defined]
    structlog_event = logging.LogRecord("x", logging.INFO, __file__, 1, {"event": "event handled"}, None, None)
    assert all(limiter.filter(structlog_event) for _ in range(100)), "our own per-event lines are never dropped"


def test_database_errors_never_carry_the_values_bound_to_the_statement(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from shared.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as connection:
        connection.execute(text("create table t (id text primary key)"))
        connection.execute(text("insert into t values (:v)"), {"v": "grade 4 neutropenia, subject 101-001"})
    with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
        connection.execute(text("insert into t values (:v)"), {"v": "grade 4 neutropenia, subject 101-001"})
    assert "neutropenia" not in str(raised.value)
    engine.dispose()


def test_our_own_lines_keep_their_fields_and_honour_the_standard_library_levels(output: io.StringIO) -> None:
    """structlog's lines skip the standard library's records (written as rendered), but not its configuration."""
    events = structlog.stdlib.get_logger("sentinel.events")
    events.info("event published", topic="t", event_id="ev-1", trial="NCT07212335", subject="101-001")
    quiet = logging.getLogger("sentinel.events")
    quiet.setLevel(logging.WARNING)
    try:
        events.info("dropped: below the logger's level")
        events.warning("kept", event_id="ev-2")
    finally:
        quiet.setLevel(logging.NOTSET)
    first, second = lines(output)
    assert first == {
        "topic": "t",
        "event_id": "ev-1",
        "trial": "NCT07212335",
        "subject": "101-001",
        "event": "event published",
        "level": "info",
        "logger": "sentinel.events",
        "time": first["time"],
    }
    assert str(first["time"]).endswith("Z")
    assert (second["event"], second["level"], second["event_id"]) == ("kept", "warning", "ev-2")


def test_our_own_lines_carry_the_trace_and_render_exceptions(output: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    events = structlog.stdlib.get_logger("sentinel.events")
    with tracer.start_as_current_span("work") as span:
        try:
            raise ValueError("boom")
        except ValueError:
            events.exception("event not handled", event_id="ev-3", webhook_secret="whsec_x")
    [line] = lines(output)
    assert line["level"] == "error" and line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "ValueError: boom" in str(line["exception"]) and line["webhook_secret"] == "[redacted]"


def test_a_logger_used_before_a_new_configuration_writes_to_the_new_stream(output: io.StringIO) -> None:
    events = structlog.stdlib.get_logger("sentinel.events")
    events.info("first")
    other = io.StringIO()
    configure_logging("info", stream=other)
    events.info("second")
    assert [line["event"] for line in lines(output)] == ["first"]
    assert [line["event"] for line in lines(other)] == ["second"]


def test_other_handlers_receive_our_lines_as_records(output: io.StringIO) -> None:
    """A handler that is not the JSON one (a test's capture, an operator's extra handler) still sees each line."""
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    extra = Capture(level=logging.INFO)
    logging.getLogger("sentinel").addHandler(extra)
    try:
        structlog.stdlib.get_logger("sentinel.events").info("event published", event_id="ev-4")
        structlog.stdlib.get_logger("sentinel.events").debug("below every level")
    finally:
        logging.getLogger("sentinel").removeHandler(extra)
    [record] = captured
    assert record.name == "sentinel.events" and record.levelno == logging.INFO
    assert json.loads(record.getMessage())["event_id"] == "ev-4"
    assert [line["event_id"] for line in lines(output)] == ["ev-4"]


def test_lines_are_encoded_as_json_dumps_would() -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    event = {"event": "x ✓", "when": datetime(2026, 1, 2, tzinfo=UTC), "n": Decimal("1.10"), "ids": ["a", None, 3]}
    assert LineEncoder()(event, default="ignored") == json.dumps(
        event, default=structlog.processors._json_fallback_handler
    )


def test_the_bound_logger_still_answers_as_a_standard_library_logger(output: io.StringIO) -> None:
    events = structlog.stdlib.get_logger("sentinel.events")
    assert events.isEnabledFor(logging.INFO) and not events.isEnabledFor(logging.DEBUG)
    assert events.name == "sentinel.events" and events.getEffectiveLevel() == logging.INFO
    assert events.propagate and events.level == logging.NOTSET


def test_a_parsed_envelope_gives_the_log_fields_its_bytes_give() -> None:
    """The consumer binds a record's log fields from the envelope it parsed, not from its bytes decoded again."""
    at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    clinical = lab("101-001", result_id="R-1", test="NEUT", value="0.4", collected_at=at)
    for envelope in (clinical, sae_detected("101-002", aware=at)):
        assert parsed_event_log_fields(envelope) == envelope_attributes(envelope.model_dump_json().encode())
    assert set(parsed_event_log_fields(clinical)) == {"event_id", "event_type", "trial", "subject", "source"}
    assert parsed_event_log_fields(object()) == {}
