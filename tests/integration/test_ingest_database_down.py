"""PostgreSQL going away under a running ingest (issue 15, defect 3): 503 + Retry-After, never a 500, and
/readyz says not ready; back to 202 and ready once it returns.

The server is the real test PostgreSQL, reached through a TCP relay the test cuts: the shared server itself is
never stopped (other suites use it), yet ingest sees exactly what a stopped server looks like (connections
refused, open ones reset).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from shared.clock import FakeClock
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import START, FakePublisher

pytestmark = pytest.mark.integration
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Relay:
    """A TCP relay to the database that can be cut (refuse and reset) and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self.open = []

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def relay(postgres_url: str) -> Iterator[tuple[Relay, str]]:
    url = make_url(postgres_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    try:
        yield relay, url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    finally:
        relay.close()


def lab(n: int) -> bytes:
    return json.dumps(
        {
            "id": f"lab-{n}",
            "type": "lab",
            "study": "NCT07212335",
            "site": "SITE-1",
            "subject": "S-001",
            "data": {
                "result_id": f"R-{n}",
                "test": "PLAT",
                "value": "24",
                "unit": "10^9/L",
                "collected_at": "2026-02-28T08:00:00Z",
            },
        }
    ).encode()


def post(client: TestClient, clock: FakeClock, body: bytes, n: int) -> httpx.Response:
    headers = signature_headers(WebhookSecret.parse(SECRET), f"wh-{n}", int(clock.now().timestamp()), body)
    return client.post("/v1/sources/edc/events", content=body, headers={**headers, "content-type": "application/json"})


def test_postgres_down_is_503_with_retry_after_and_not_ready(relay: tuple[Relay, str], tmp_path: Path) -> None:
    cutter, url = relay
    clock = FakeClock(START)
    settings = IngestSettings(
        database_url=url, webhook_secrets={"edc": SECRET}, var_dir=tmp_path, background_jobs=False
    )
    app = create_app(settings, publisher=FakePublisher(), clock=clock, registry=CollectorRegistry(), env={})
    with TestClient(app) as client:
        assert post(client, clock, lab(1), 1).status_code == 202
        assert client.get("/readyz").json()["checks"]["database"] is True
        cutter.cut()
        for n in range(2, 5):
            response = post(client, clock, lab(n), n)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "30"
            assert response.headers["content-type"] == "application/problem+json"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
        cutter.restore()
        assert post(client, clock, lab(5), 5).status_code == 202
        assert client.get("/readyz").json()["checks"]["database"] is True
