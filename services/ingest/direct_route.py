"""The canonical webhook route served straight from ASGI: the same handler and answers, less machinery.

A signed single-event post spent about a quarter of its CPU in FastAPI's per-request layers (exception and body
limit middleware, routing through every route, dependency solving, the request/response wrappers), more than the
handler's own parsing (profiled). This middleware sits inside the request counter and the trace context, takes
`POST /v1/sources/{source_id}/events` with a well-formed source id, and calls the very endpoint FastAPI would
call. Its errors are answered as the app answers them: a ProblemError as problem+json, an unreachable database as
503 with Retry-After; anything else propagates to the server error middleware (500 problem+json, logged), as
before. Everything else (a malformed id, another method, every other route) goes through FastAPI unchanged, and
FastAPI still documents the route in the OpenAPI schema.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.http import DATABASE_UNAVAILABLE, database_problem
from shared.problems import ProblemError, problem_response

Endpoint = Callable[[str, Request], Awaitable[Response]]
log = logging.getLogger(__name__)


class DirectRoute:
    """Serve one `POST /prefix/{id}/suffix` route with `endpoint(id, request)`, bypassing the router."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        route: BaseRoute,
        endpoint: Endpoint,
        prefix: str,
        suffix: str,
        id_pattern: str,
        retry_after: int,
    ) -> None:
        self.app = app
        self.route = route
        self.endpoint = endpoint
        self.prefix = prefix
        self.suffix = suffix
        self.valid_id = re.compile(id_pattern).fullmatch
        self.retry_after = retry_after

    def _id(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return None
        found = path[len(self.prefix) : len(path) - len(self.suffix)]
        return found if "/" not in found and self.valid_id(found) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._id(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the request counter labels it by, as the router would set it
        scope["path_params"] = {"source_id": found}
        request = Request(scope, receive)
        try:
            response = await self.endpoint(found, request)
        except ProblemError as exc:
            response = problem_response(exc, instance=scope["path"])
        except DATABASE_UNAVAILABLE as exc:
            log.warning("database unavailable on %s: %s", scope["path"], type(exc).__name__)
            response = problem_response(database_problem(self.retry_after), instance=scope["path"])
        await response(scope, receive, send)
