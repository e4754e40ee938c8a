"""RFC 9457 problem details: every client error names what is wrong and where, never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://sentinel.invalid/problems/"
log = logging.getLogger(__name__)


class ProblemError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(error: ProblemError, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + error.slug if error.slug else "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance:
        body["instance"] = instance
    body.update(error.extensions)
    return JSONResponse(body, status_code=error.status, headers=error.headers, media_type=PROBLEM_JSON)


def json_pointer(loc: Iterable[str | int]) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts) if parts else ""


def validation_problem(errors: Sequence[dict[str, Any]], *, prefix: Sequence[str | int] = ()) -> ProblemError:
    """422 listing each invalid field as a JSON pointer into the request body."""
    items = [
        {"pointer": json_pointer([*prefix, *err.get("loc", ())]), "detail": err.get("msg", "invalid")} for err in errors
    ]
    first = items[0]["pointer"] if items else ""
    return ProblemError(
        422,
        "Invalid event",
        f"{len(items)} field(s) are invalid, first at {first or 'the body'}: {items[0]['detail'] if items else ''}",
        slug="invalid-field",
        errors=items,
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [dict(e) for e in exc.errors()]
        for err in errors:  # FastAPI prefixes 'body'/'query'/'path'; keep it, it tells where to look
            err["loc"] = tuple(err.get("loc", ()))
        return problem_response(validation_problem(errors), instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        problem = ProblemError(
            exc.status_code, _reason(exc.status_code), str(exc.detail), headers=dict(exc.headers or {})
        )
        return problem_response(problem, instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        problem = ProblemError(500, "Internal error", "An unexpected error occurred; it has been logged.")
        return problem_response(problem, instance=request.url.path)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
