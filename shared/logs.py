"""Logs as one JSON object per line, configured once at start (`configure_logging`).

Every line, ours, the libraries' and uvicorn's access log alike, goes through the same processors: ISO UTC
time, level, logger, the trace and span ids of the current OpenTelemetry span, and whatever the code bound
for the message at hand (event id, trial, subject, source; see `event_log_fields`). So one SAE can be
followed from the webhook to the mail by its event id or its trace id.

What never appears: secrets (values under keys that name one are replaced), query strings (a bearer token
may travel in one), client addresses, and clinical content: only identifiers are bound, never payloads.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

SECRET_KEYS = re.compile(r"secret|token|password|passwd|authorization|signature|api[_-]?key|cookie", re.I)
REDACTED = "[redacted]"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# The envelope attributes worth a log field, and the names they get there.
EVENT_FIELDS = {"id": "event_id", "type": "event_type", "trialid": "trial", "subject": "subject", "source": "source"}


def add_trace_ids(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current span's ids, as OTLP backends print them (32 and 16 lower-case hex digits)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def redact_secrets(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if SECRET_KEYS.search(key) and event[key] is not None:
            event[key] = REDACTED
    return event


def structure_access_log(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn's access record `'%s - "%s %s HTTP/%s" %d'` as fields; the path without its query string."""
    args = event.pop("positional_args", None)  # the record's arguments (ProcessorFormatter pass_foreign_args)
    record = event.get("_record")
    if record is None or record.name != "uvicorn.access":
        return event
    if isinstance(args, tuple) and len(args) == 5:
        _client, method, full_path, http_version, status = args
        event["event"] = "http request"
        event["method"] = method
        event["path"] = str(full_path).split("?", 1)[0]
        event["status"] = status
        event["http_version"] = http_version
    return event


def note_suppressed_repeats(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    suppressed = getattr(record, "suppressed_repeats", 0)
    if suppressed:
        event["suppressed_repeats"] = suppressed
    return event


class RepeatLimiter(logging.Filter):
    """Keeps a few lines per message template and window; counts the rest on the next line that passes.

    Why: while the broker is down, aiokafka logs the same connection error hundreds of times a second (21,645
    lines in one 10 s outage of the fault suite): that buries the lines that matter and costs CPU the
    service needs to recover. Only the standard library's records are limited: our own per-event lines
    (structlog) are all kept.
    """

    def __init__(
        self, *, per_window: int = 5, window_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._per_window = per_window
        self._window = window_seconds
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True  # a structlog event: never limited
        key = (record.name, record.msg)
        now = self._clock()
        with self._lock:
            started, passed, suppressed = self._seen.get(key, (now, 0, 0))
            if now - started >= self._window:
                if suppressed:
                    record.suppressed_repeats = suppressed
                started, passed, suppressed = now, 0, 0
            keep = passed < self._per_window
            self._seen[key] = (started, passed + keep, suppressed + (not keep))
        return keep


def event_log_fields(attributes: Mapping[str, object]) -> dict[str, str]:
    """The identifying attributes of a CloudEvent envelope, named as log fields; nothing from its data."""
    return {field: str(attributes[key]) for key, field in EVENT_FIELDS.items() if attributes.get(key) is not None}


def configure_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Route the standard library's logging (and so uvicorn's and every library's) through structlog's JSON.

    Call once, before the servers start; uvicorn must be started with `log_config=None` so it keeps this.
    """
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        add_trace_ids,
        structure_access_log,
        note_suppressed_repeats,
        redact_secrets,
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:  # uvicorn's own handlers would print a second, unstructured copy
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
