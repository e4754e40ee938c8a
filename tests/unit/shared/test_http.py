"""Health and readiness as an orchestrator reads them."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

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
