"""The console's only way to read or change anything: notify's and safety's officer APIs over HTTP, with the
signed-in user's own bearer token, so the APIs decide what the user may do and audit it under their name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class ApiProblem(Exception):
    """The API refused or failed: its RFC 9457 problem, kept for the page to show."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail


@dataclass(frozen=True)
class OfficerApi:
    client: httpx.AsyncClient
    notify_url: str
    safety_url: str
    token: str

    async def _call(self, method: str, url: str, *, params: dict[str, Any] | None, body: object) -> Any:
        headers = {"authorization": f"Bearer {self.token}", "accept": "application/json"}
        try:
            response = await self.client.request(method, url, params=params, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiProblem(503, "Service unreachable", f"{url.split('/v1')[0]} did not answer ({exc})") from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            detail = problem.get("detail") if isinstance(problem, dict) else None
            errors = problem.get("errors") if isinstance(problem, dict) else None
            if not detail and isinstance(errors, list) and errors:
                detail = "; ".join(str(e.get("detail", e)) for e in errors if isinstance(e, dict))
            title = problem.get("title") if isinstance(problem, dict) else None
            raise ApiProblem(response.status_code, str(title or response.reason_phrase), str(detail or ""))
        return response.json()

    async def notify(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: object = None) -> Any:
        return await self._call(method, f"{self.notify_url.rstrip('/')}/v1{path}", params=params, body=body)

    async def safety(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: object = None) -> Any:
        return await self._call(method, f"{self.safety_url.rstrip('/')}/v1{path}", params=params, body=body)
