"""Logs as one JSON object per line, configured once at start (`configure_logging`).

Every line, ours, the libraries' and uvicorn's access log alike, goes through the same processors: ISO UTC
time, level, logger, the trace and span ids of the current OpenTelemetry span, and whatever the code bound
for the message at hand (event id, trial, subject, source; see `event_log_fields`). So one SAE can be
followed from the webhook to the mail by its event id or its trace id.

Our own structlog lines (one per event published or handled) are rendered by structlog and written straight to
the JSON handler's stream: going through a standard library record, its caller lookup and a second copy of it
in the formatter cost three quarters of such a line (32 us of a single-event post, profiled). Library records
still take the standard library's path, with its filters.

What never appears: secrets (values under keys that name one are replaced), query strings (a bearer token
may travel in one), client addresses, and clinical content: only identifiers are bound, never payloads.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from functools import lru_cache
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


_EVENT_FIELDS: contextvars.ContextVar[Mapping[str, object] | None] = contextvars.ContextVar(
    "sentinel_event_fields", default=None
)


@contextlib.contextmanager
def bound_event(**fields: object) -> Iterator[None]:
    """The fields of the event at hand on every log line written in the block (unless a line sets its own).

    One context variable for all of them: structlog's `bound_contextvars` sets one per field, 11 us per consumed
    event, where this takes well under one."""
    token = _EVENT_FIELDS.set(fields)
    try:
        yield
    finally:
        _EVENT_FIELDS.reset(token)


def merge_event_fields(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    fields = _EVENT_FIELDS.get()
    if fields:
        for key, value in fields.items():
            event.setdefault(key, value)
    return event


IDS_PER_LINE = 100
"""Event ids listed in one log line at most: a backfill's thousand would make a 40 KB line, which container
runtimes split (Docker at 16 KB) and log stores truncate."""


def id_chunks(ids: list[str]) -> list[list[str]]:
    """`ids` in lists of at most IDS_PER_LINE, one per log line, in order; one empty list for none."""
    return [ids[start : start + IDS_PER_LINE] for start in range(0, len(ids), IDS_PER_LINE)] or [[]]


def redact_secrets(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if names_a_secret(key) and event[key] is not None:
            event[key] = REDACTED
    return event


@lru_cache(maxsize=1024)  # a line's keys come from a small set: search each once, not on every line
def names_a_secret(key: str) -> bool:
    return SECRET_KEYS.search(key) is not None


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


def parsed_event_log_fields(envelope: object) -> dict[str, str]:
    """`event_log_fields` of an envelope already parsed, from its attributes: a consumer's record is not decoded a
    second time for its log fields (about 4 us a record)."""
    found = ((field, getattr(envelope, key, None)) for key, field in EVENT_FIELDS.items())
    return {field: str(value) for field, value in found if value is not None}


class LineEncoder:
    """`json.dumps(event, default=...)` as structlog's JSONRenderer calls it, with one encoder built once: with a
    `default`, json.dumps builds a new encoder for every call, a third of a line's rendering (profiled)."""

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(default=structlog.processors._json_fallback_handler)

    def __call__(self, event: Any, **_options: Any) -> str:
        return self._encoder.encode(event)


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stream handler of `configure_logging`; also takes lines structlog rendered already (`write_line`)."""

    def write_line(self, line: str, levelno: int) -> None:
        """What `emit` does with a formatted record: the line under the handler's lock, flushed. Filters are not
        consulted: they limit library records only (`RepeatLimiter`)."""
        if levelno < self.level:
            return
        try:
            with self.lock or contextlib.nullcontext():
                self.stream.write(line + self.terminator)
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.LogRecord("sentinel", levelno, __file__, 0, line, None, None))


class LineLogger:
    """What structlog's bound loggers call once their processors rendered the JSON line: the line goes to the
    handlers of the standard library logger of the same name (its level, `propagate` and ancestors' handlers
    honoured, as for a record). A `JsonLineHandler` writes it as it is; any other handler (a test's capture)
    gets a record whose message is the line."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger = logging.getLogger(name)

    @property
    def disabled(self) -> bool:  # `structlog.stdlib.filter_by_level` reads it
        return self._logger.disabled

    def __getattr__(self, name: str) -> Any:
        """The rest of `logging.Logger` (`level`, `isEnabledFor`, `handlers`...), for what structlog's stdlib
        BoundLogger forwards to the logger it wraps."""
        if name.startswith("__") or name == "_logger":  # copies and pickles probe these before __init__ ran
            raise AttributeError(name)
        return getattr(self._logger, name)

    def getEffectiveLevel(self) -> int:  # the standard library's name: filter_by_level calls it
        return self._logger.getEffectiveLevel()

    def _write(self, levelno: int, line: str) -> None:
        logger: logging.Logger | None = self._logger
        record: logging.LogRecord | None = None
        while logger is not None:
            for handler in logger.handlers:
                if isinstance(handler, JsonLineHandler):
                    handler.write_line(line, levelno)
                    continue
                if record is None:
                    record = self._logger.makeRecord(self.name, levelno, "(structlog)", 0, line, (), None)
                if levelno >= handler.level:
                    handler.handle(record)
            logger = logger.parent if logger.propagate else None

    def debug(self, line: str) -> None:
        self._write(logging.DEBUG, line)

    def info(self, line: str) -> None:
        self._write(logging.INFO, line)

    def warning(self, line: str) -> None:
        self._write(logging.WARNING, line)

    def error(self, line: str) -> None:
        self._write(logging.ERROR, line)

    def critical(self, line: str) -> None:
        self._write(logging.CRITICAL, line)

    fatal = critical
    exception = error
    msg = info
    warn = warning


def line_logger_factory(*args: Any) -> LineLogger:
    """structlog's logger factory: the name as `structlog.stdlib.LoggerFactory` finds it (the first argument of
    `get_logger`), else the caller's module."""
    if args and isinstance(args[0], str):
        return LineLogger(args[0])
    _frame, name = structlog._frames._find_first_app_frame_and_name(["structlog", __name__])
    return LineLogger(name)


def configure_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Route the standard library's logging (and so uvicorn's and every library's) through structlog's JSON.

    Call once, before the servers start; uvicorn must be started with `log_config=None` so it keeps this.
    """
    common: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_event_fields,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        add_trace_ids,
    ]
    # the access-log and repeat-limiter steps read a standard library record: ours have none
    foreign: list[structlog.types.Processor] = [*common, structure_access_log, note_suppressed_repeats, redact_secrets]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *common,
            redact_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=LineEncoder()),
        ],
        logger_factory=line_logger_factory,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign,
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = JsonLineHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:  # uvicorn's own handlers would print a second, unstructured copy
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
