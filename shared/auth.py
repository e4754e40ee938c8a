"""Bearer tokens with roles for the officer and safety APIs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import Request

from shared.problems import ProblemError
from shared.settings import ApiUser, Role, TokenTable

ROLE_RANK: dict[Role, int] = {"viewer": 0, "officer": 1, "admin": 2}


class TokenAuthenticator:
    def __init__(self, tokens: Mapping[str, ApiUser]) -> None:
        self._tokens = tokens if isinstance(tokens, TokenTable) else TokenTable(tokens)

    def authenticate(self, authorization: str | None) -> ApiUser:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ProblemError(
                401,
                "Unauthorized",
                "send 'Authorization: Bearer <token>'",
                slug="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        user = self._tokens.match(token.strip())
        if user is not None:
            return user
        raise ProblemError(
            401, "Unauthorized", "unknown token", slug="unauthorized", headers={"WWW-Authenticate": "Bearer"}
        )


def require_role(minimum: Role) -> Callable[[Request], ApiUser]:
    """A FastAPI dependency: the caller, if their role is at least `minimum`; else 401/403."""

    def dependency(request: Request) -> ApiUser:
        authenticator: TokenAuthenticator = request.app.state.authenticator
        user = authenticator.authenticate(request.headers.get("authorization"))
        if ROLE_RANK[user.role] < ROLE_RANK[minimum]:
            raise ProblemError(
                403, "Forbidden", f"this action needs the '{minimum}' role; you have '{user.role}'", slug="forbidden"
            )
        return user

    return dependency
