"""What the shared package's unit tests share: the JSON log lines a test's code wrote."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from shared.logs import configure_logging


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The services' logging configuration, writing to a buffer for the test (restored afterwards)."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("info", stream=stream)
    try:
        yield stream
    finally:
        root.handlers, level = saved
        root.setLevel(level)
        structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]
