"""Fixtures shared by the end-to-end tests: a real SMTP catcher and the services as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.mail_catcher import MailCatcher
from tests.e2e.stack import Stack


@pytest.fixture
def catcher(tmp_path: Path) -> Iterator[MailCatcher]:
    with MailCatcher(tmp_path / "mail", port=0) as mail:
        yield mail


@pytest.fixture
def stack(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, catcher: MailCatcher) -> Iterator[Stack]:
    """The stack, none of its services started yet; stopped (whatever was started) after the test."""
    running = Stack(tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, smtp_port=catcher.port)
    try:
        yield running
    finally:
        running.stop()
