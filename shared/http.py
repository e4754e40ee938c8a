"""What every service's HTTP side has: health, readiness, metrics, problem+json and request counting."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.metrics import HttpMetrics, register_process_metrics
from shared.problems import install_problem_handlers

ReadinessCheck = Callable[[], Mapping[str, bool]]


def install_common(
    app: FastAPI,
    *,
    registry: CollectorRegistry,
    service: str,
    readiness: ReadinessCheck,
    liveness: Callable[[], bool] = lambda: True,
) -> None:
    install_problem_handlers(app)
    metrics = HttpMetrics.create(registry, service)
    register_process_metrics(registry, service)

    @app.middleware("http")
    async def _count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(route=template, status=str(response.status_code)).inc()
        metrics.duration.labels(route=template, method=request.method).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        alive = liveness()
        return JSONResponse(
            {"status": "ok" if alive else "failed", "service": service}, status_code=200 if alive else 503
        )

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = dict(readiness())
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
