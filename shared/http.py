"""What every service's HTTP side has: health, readiness, metrics, problem+json and request counting.

A database that cannot be reached is an outage, not a bug: requests that need it answer 503 with Retry-After
(as for a broker outage) instead of 500, and `/readyz` reports it, so a load balancer stops sending traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import HttpMetrics, register_process_metrics
from shared.problems import ProblemError, install_problem_handlers, problem_response

ReadinessCheck = Callable[[], Mapping[str, bool]]
DATABASE_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)
"""What SQLAlchemy raises when the database is down, unreachable, out of connections or out of disk."""
DATABASE_PING_SECONDS = 2.0
log = logging.getLogger(__name__)


def database_problem(retry_after: int) -> ProblemError:
    return ProblemError(
        503,
        "Database unavailable",
        f"the database cannot be reached; nothing was lost, retry after {retry_after} s",
        slug="database-unavailable",
        headers={"Retry-After": str(retry_after)},
    )


async def database_ready(engine: Engine, within: float = DATABASE_PING_SECONDS) -> bool:
    """`SELECT 1` answered `within` seconds; a server that does not answer in time is not ready."""

    def ping() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(ping), within)
    except (TimeoutError, sa_exc.SQLAlchemyError, OSError):
        return False
    return True


class RequestCounter:
    """Counts and times requests by route template: a plain ASGI middleware, since Starlette's
    BaseHTTPMiddleware costs a task group and a memory stream per request on the hot path."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception escaping the app is answered 500 by the server error middleware
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route=template, status=str(status)).inc()
            elapsed = time.perf_counter() - started
            self.metrics.duration.labels(route=template, method=scope.get("method", "")).observe(elapsed)


def install_common(
    app: FastAPI,
    *,
    registry: CollectorRegistry,
    service: str,
    readiness: ReadinessCheck,
    liveness: Callable[[], bool] = lambda: True,
    database: Engine | None = None,
    retry_after: int = 30,
) -> None:
    install_problem_handlers(app)
    app.add_middleware(RequestCounter, metrics=HttpMetrics.create(registry, service))
    register_process_metrics(registry, service)

    async def _database_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
        return problem_response(database_problem(retry_after), instance=request.url.path)

    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_down)

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
        if database is not None:
            checks["database"] = await database_ready(database)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
