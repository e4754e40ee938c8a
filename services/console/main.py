"""The console's composition root: settings, protocol, templates, one HTTP client to the officer APIs.

It owns no tables and no Kafka client: everything it shows or changes goes through notify's and safety's APIs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry

from services.console import pages, presenting, signin
from services.console.runtime import ConsoleRuntime
from services.console.settings import ConsoleSettings, OidcSettings
from shared.clock import Clock, SystemClock
from shared.http import install_common
from shared.protocol import load_protocol

SERVICE = "console"
HERE = Path(__file__).parent


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=HERE / "templates")
    found.env.globals["when"] = presenting.when
    found.env.globals["last_day"] = presenting.last_day
    found.env.filters["words"] = lambda value: str(value or "").replace("_", " ")
    return found


def create_app(
    settings: ConsoleSettings,
    *,
    oidc: OidcSettings | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """`transport` replaces the network to the APIs in unit tests (httpx.MockTransport)."""
    registry = registry or CollectorRegistry()
    protocol = load_protocol(Path(settings.protocol_path) if settings.protocol_path else None)
    client = httpx.AsyncClient(timeout=settings.api_timeout_seconds, transport=transport)
    runtime = ConsoleRuntime(
        settings=settings,
        oidc=oidc or OidcSettings(),
        protocol=protocol,
        clock=clock or SystemClock(),
        templates=templates(),
        client=client,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="Sentinel console", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    install_common(app, registry=registry, service=SERVICE, readiness=lambda: {"templates": True})

    @app.exception_handler(signin.SignInRequired)
    async def _sign_in(request: Request, exc: signin.SignInRequired) -> Response:
        response = RedirectResponse(f"/console/login?next={httpx.URL(exc.next_path)}", status_code=303)
        response.delete_cookie(signin.SESSION_COOKIE, path="/console")
        return response

    @app.exception_handler(signin.Refused)
    async def _refused(request: Request, exc: signin.Refused) -> Response:
        found = signin.session_of(request, runtime)
        response: HTMLResponse = runtime.templates.TemplateResponse(
            request,
            "refused.html",
            {
                "message": exc.message,
                "session": found[0] if found else None,
                "trial": protocol.trial_id,
                "flash": None,
                "can_act": False,
            },
            status_code=exc.status,
        )
        return response

    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(signin.router)
    app.include_router(pages.router)
    return app
