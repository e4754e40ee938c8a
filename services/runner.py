"""Run one or more service apps in one process under uvicorn, stopping all of them on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from shared.schema_version import SHARED, Component

SERVICES = ("ingest", "safety", "notify")
"""Services with their own database (and migrations)."""
RUNNABLE = (*SERVICES, "console")
"""What `sentinel run` starts: the console owns no tables; it reads and acts through the officer APIs."""


@dataclass(frozen=True)
class ServedApp:
    name: str
    app: FastAPI
    host: str
    port: int


class _Server(uvicorn.Server):
    """Signals are handled once for all servers in the process, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def migration_components(name: str) -> list[Component]:
    """What `sentinel db upgrade` migrates for a service: the shared tables and its own."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; choose from {SERVICES}")
    return [SHARED, Component(name, f"services.{name}:migrations")]


def build_app(name: str) -> ServedApp:
    """Each service's composition root reads its own settings from the environment, here and only here."""
    if name == "ingest":
        from services.ingest.main import create_app as create_ingest
        from services.ingest.settings import IngestSettings

        ingest = IngestSettings()
        return ServedApp(name, create_ingest(ingest), ingest.host, ingest.ingest_port)
    if name == "safety":
        from services.safety.main import create_app as create_safety
        from services.safety.settings import SafetySettings

        safety = SafetySettings()
        return ServedApp(name, create_safety(safety), safety.host, safety.safety_port)
    if name == "notify":
        from services.notify.main import create_app as create_notify
        from services.notify.settings import NotifySettings

        notify = NotifySettings()
        return ServedApp(name, create_notify(notify), notify.host, notify.notify_port)
    if name == "console":
        from services.console.main import create_app as create_console
        from services.console.settings import ConsoleSettings, OidcSettings

        console = ConsoleSettings()
        return ServedApp(name, create_console(console, oidc=OidcSettings()), console.host, console.console_port)
    raise ValueError(f"unknown service {name!r}; choose from {RUNNABLE}")


async def serve(apps: Sequence[ServedApp], *, log_level: str = "info") -> None:
    servers = [
        # log_config=None: uvicorn keeps the JSON logging `configure_logging` set up, access log included.
        _Server(uvicorn.Config(a.app, host=a.host, port=a.port, log_level=log_level, lifespan="on", log_config=None))
        for a in apps
    ]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop()  # one server ending (error or signal) ends them all
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    for server in servers:
        if not server.started:
            raise SystemExit(f"a service failed to start; see the log above ({[a.name for a in apps]})")


def configure_logging(level: str) -> None:
    """One JSON object per line for every logger (see shared.logs)."""
    from shared.logs import configure_logging as configure_json_logging

    configure_json_logging(level)
