"""Health and readiness as an orchestrator reads them."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from shared.db import make_engine
from shared.http import install_common


def app_with(*, ready: bool, alive: bool) -> TestClient:
    app = FastAPI()
    install_common(
        app, registry=CollectorRegistry(), service="x", readiness=lambda: {"broker": ready}, liveness=lambda: alive
    )
    return TestClient(app)


def test_dead_background_processing_fails_liveness_so_the_pod_restarts() -> None:
    client = app_with(ready=False, alive=False)
    assert client.get("/healthz").status_code == 503
    assert client.get("/healthz").json()["status"] == "failed"


def test_not_ready_is_not_dead() -> None:
    client = app_with(ready=False, alive=True)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").json() == {"ready": False, "checks": {"broker": False}}


def test_requests_are_counted_by_route_template_and_status() -> None:
    registry = CollectorRegistry()
    app = FastAPI()
    install_common(app, registry=registry, service="x", readiness=lambda: {})

    @app.post("/v1/items/{item}", status_code=202)
    async def accept(item: str) -> dict[str, str]:
        return {"item": item}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/v1/items/a").status_code == 202
    assert client.post("/v1/items/b").status_code == 202
    assert client.get("/boom").status_code == 500
    assert client.get("/nowhere").status_code == 404

    def count(route: str, status: str) -> float | None:
        return registry.get_sample_value("sentinel_x_http_requests_total", {"route": route, "status": status})

    assert count("/v1/items/{item}", "202") == 2
    assert count("/boom", "500") == 1
    assert count("unmatched", "404") == 1


def test_every_service_reports_its_database_and_answers_503_while_it_is_down(tmp_path: Path) -> None:
    """Shared by ingest, safety and notify: /readyz checks the database; a request that needs it gets 503."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'x.db'}")
    app = FastAPI()
    install_common(app, registry=CollectorRegistry(), service="x", readiness=lambda: {}, database=engine, retry_after=7)

    @app.get("/v1/things")
    def things() -> list[int]:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("SELECT 1"))]

    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/readyz").json() == {"ready": True, "checks": {"database": True}}
    engine.dispose()
    shutil.rmtree(tmp_path / "db")  # SQLite can no longer open its file
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"] == {"database": False}
    response = client.get("/v1/things")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["title"] == "Database unavailable"
