"""Shared fakes for the unit suite: a frozen clock, a file-backed SQLite engine, a recording publisher,
and builders for the envelopes that flow between the services."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from services.notify.channels.email import DeliveryError
from shared.clock import FakeClock
from shared.db import make_engine
from shared.events import (
    AeData,
    AeReported,
    AwarenessBasis,
    SaeData,
    SaeDetected,
    SaeUpdated,
    deterministic_id,
)
from shared.kafka import BrokerUnavailable, OutgoingRecord
from shared.protocol import Protocol, load_protocol

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TRIAL = "NCT07212335"


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.failures = 0
        self.during_send: Any = None

    @property
    def sender(self) -> str:
        return "Sentinel <sentinel@test>"

    async def send(self, message: EmailMessage) -> None:
        if self.during_send is not None:
            await self.during_send()
        if self.failures:
            self.failures -= 1
            raise DeliveryError("SMTP 451 try later")
        self.sent.append(message)


class FakePublisher:
    """Records what the broker 'acknowledged'; raises BrokerUnavailable while `down` is set."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.down = False

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        if self.down:
            raise BrokerUnavailable("broker is down (fake)")
        self.messages.append((topic, key, value))

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        if self.down:
            raise BrokerUnavailable("broker is down (fake)")
        self.messages += [(r.topic, r.key, r.value) for r in records]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """SENTINEL_* variables from the developer's shell must not change what a unit test sees."""
    for name in list(os.environ):
        if name.startswith("SENTINEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/unit.db")
    yield engine
    engine.dispose()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture(scope="session")
def protocol() -> Protocol:
    return load_protocol(None)


AeFactory = Callable[..., AeReported]


@pytest.fixture
def make_ae() -> AeFactory:
    """An `ae.reported` envelope as ingest would publish it; keyword overrides go into `data`."""

    def build(
        *,
        trial: str = TRIAL,
        subject: str = "S-001",
        site: str = "SITE-1",
        sender_id: str | None = None,
        received_at: datetime = START,
        **data: Any,
    ) -> AeReported:
        payload: dict[str, Any] = {"ae_id": "AE-1", "version": 1, "term": "Febrile neutropenia", "grade": 3}
        payload.update(data)
        sender = sender_id or f"{payload['ae_id']}-v{payload['version']}"
        return AeReported(
            id=deterministic_id("inbound", "edc", sender),
            source="/sources/edc",
            subject=subject,
            time=payload.get("awareness_at") or received_at,
            trialid=trial,
            siteid=site,
            receivedat=received_at,
            senderid=sender,
            data=AeData.model_validate(payload),
        )

    return build


SaeFactory = Callable[..., SaeDetected | SaeUpdated]


@pytest.fixture
def make_sae() -> SaeFactory:
    """A safety signal as notify consumes it; keyword overrides go into `data`."""

    def build(
        *,
        kind: str = "detected",
        trial: str = TRIAL,
        signal_id: str | None = None,
        **data: Any,
    ) -> SaeDetected | SaeUpdated:
        payload: dict[str, Any] = {
            "site_id": "SITE-1",
            "subject_id": "S-001",
            "ae_id": "AE-1",
            "ae_version": 1,
            "term": "Febrile neutropenia",
            "grade": 3,
            "criteria": ["hospitalization"],
            "relatedness": "possible",
            "outcome": None,
            "onset": "2026-02",
            "awareness_at": START,
            "awareness_basis": AwarenessBasis.SITE,
            "received_at": START,
            "source_event_id": "evt-1",
        }
        payload.update(data)
        envelope_type = SaeDetected if kind == "detected" else SaeUpdated
        return envelope_type(
            id=signal_id or deterministic_id("test-signal", kind, payload["ae_id"], str(payload["ae_version"])),
            source="/services/safety",
            subject=payload["subject_id"],
            time=payload["received_at"],
            trialid=trial,
            data=SaeData.model_validate(payload),
        )

    return build
