"""Ingest test helpers: the fixtures folder, a sources file loader, and an app wired to fakes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from services.ingest.sources import Source, parse_sources
from shared.clock import FakeClock
from tests.unit.conftest import FakePublisher

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "edc"
TRIAL = "NCT07212335"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def fixture_bytes(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def load_fixture_sources(relative: str, env: Mapping[str, str] | None = None) -> dict[str, Source]:
    return parse_sources(yaml.safe_load((FIXTURES / relative).read_text()), env or {})


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(clean_env: None, tmp_path: Path, publisher: FakePublisher, clock: FakeClock) -> Iterator[AppFactory]:
    """Build an ingest app from a sources document (dict), with fakes; background jobs are driven by the test."""
    clients: list[TestClient] = []

    def build(
        sources: dict[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **settings: Any,
    ) -> TestClient:
        path = tmp_path / f"sources-{len(clients)}.yaml"
        path.write_text(yaml.safe_dump(sources))
        config = IngestSettings(
            sources_path=path,
            var_dir=tmp_path,
            clinical_topic="test.clinical.v1",
            background_jobs=False,
            **settings,
        )
        app = create_app(
            config,
            publisher=publisher,
            clock=clock,
            registry=CollectorRegistry(),
            env=env or {},
            redcap_transport=transport,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def webhook_id(body: bytes) -> str:
    """A sender's message id: the same for a resend of the same body, new for another body (Standard Webhooks)."""
    return "wh-" + hashlib.sha256(body).hexdigest()[:16]
