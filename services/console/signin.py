"""Sign-in and sign-out: an API token in the form field `token` (the same users and roles as the APIs), or
OpenID Connect single sign-on when configured. Also the session and CSRF checks every other route uses."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.runtime import ConsoleRuntime
from services.console.sessions import (
    ConsoleSession,
    decode_session,
    encode_session,
    new_session,
    sign,
    token_digest,
    unsign,
)
from shared.settings import ApiUser

router = APIRouter(prefix="/console")
SESSION_COOKIE = "sentinel_console"
LOGIN_COOKIE = "sentinel_console_login"
FLASH_COOKIE = "sentinel_console_flash"
OIDC_COOKIE = "sentinel_console_oidc"
ROLE_RANK = {"viewer": 0, "officer": 1, "admin": 2}


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Refused(Exception):
    """A request the console will not pass on (bad CSRF token, foreign origin, role too low)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def runtime_of(request: Request) -> ConsoleRuntime:
    runtime: ConsoleRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[ConsoleRuntime, Depends(runtime_of)]


def secure_cookies(request: Request, runtime: ConsoleRuntime) -> bool:
    mode = runtime.settings.cookie_secure
    if mode != "auto":
        return mode == "always"
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    public = runtime.settings.console_url or ""
    return request.url.scheme == "https" or forwarded == "https" or public.startswith("https://")


def set_cookie(response: Response, request: Request, runtime: ConsoleRuntime, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/console",
        httponly=True,
        samesite="lax",  # Strict would drop the session when the officer follows the link in a mail
        secure=secure_cookies(request, runtime),
    )


def token_for(runtime: ConsoleRuntime, digest: str) -> tuple[str, ApiUser] | None:
    for token, user in runtime.tokens.items():
        if hmac.compare_digest(token_digest(token), digest):
            return token, user
    return None


def session_of(request: Request, runtime: ConsoleRuntime) -> tuple[ConsoleSession, str] | None:
    """The session and the user's API token; None when signed out, expired, or the token was revoked."""
    now = runtime.clock.now()
    session = decode_session(
        runtime.settings.console_secret,
        request.cookies.get(SESSION_COOKIE),
        now=now,
        idle=runtime.idle,
        max_age=runtime.max_age,
    )
    if session is None:
        return None
    found = token_for(runtime, session.token_sha256)
    if found is None or found[1].user != session.user or found[1].role != session.role:
        return None
    return session.touched(now), found[0]


def require_session(request: Request, runtime: Runtime) -> tuple[ConsoleSession, str]:
    found = session_of(request, runtime)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target if request.method == "GET" else "/console/inbox")
    return found


Signed = Annotated[tuple[ConsoleSession, str], Depends(require_session)]


def keep_session(response: Response, request: Request, runtime: ConsoleRuntime, session: ConsoleSession) -> None:
    """Sliding idle expiry: every answer to a signed-in user carries the cookie with a fresh `seen` time."""
    value = encode_session(runtime.settings.console_secret, session)
    set_cookie(response, request, runtime, SESSION_COOKIE, value, int(runtime.max_age.total_seconds()))


def check_origin(request: Request, runtime: ConsoleRuntime) -> None:
    """A browser's cross-site POST names its origin; refuse any that is not this console."""
    origin = request.headers.get("origin")
    if not origin or (origin == "null" and request.headers.get("sec-fetch-site") == "same-origin"):
        return
    allowed = {request.url.netloc}
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded:
        allowed.add(forwarded.split(",")[0].strip())
    if runtime.settings.console_url:
        allowed.add(urlsplit(runtime.settings.console_url).netloc)
    if urlsplit(origin).netloc not in allowed:
        raise Refused(403, "This form was posted from another site; nothing was changed.")


async def checked_form(request: Request, runtime: ConsoleRuntime, session: ConsoleSession) -> Mapping[str, Any]:
    """The posted form, after its CSRF token matched the session's and its origin is this console."""
    check_origin(request, runtime)
    form = await request.form()
    sent = form.get("csrf_token")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
        raise Refused(403, "The form's security token did not match your session; reload the page and try again.")
    return form


def require_role(session: ConsoleSession, minimum: str) -> None:
    if ROLE_RANK[session.role] < ROLE_RANK[minimum]:
        raise Refused(403, f"This action needs the '{minimum}' role; you are signed in as '{session.role}'.")


def flash(response: Response, request: Request, runtime: ConsoleRuntime, kind: str, text: str) -> None:
    value = sign(runtime.settings.console_secret, "flash", {"k": kind, "t": text[:600]})
    set_cookie(response, request, runtime, FLASH_COOKIE, value, 120)


def take_flash(request: Request, runtime: ConsoleRuntime) -> dict[str, str] | None:
    payload = unsign(runtime.settings.console_secret, "flash", request.cookies.get(FLASH_COOKIE))
    if payload is None:
        return None
    return {"kind": str(payload.get("k", "info")), "text": str(payload.get("t", ""))}


def safe_next(target: object) -> str:
    """Only a path inside the console: never an open redirect to another site."""
    if isinstance(target, str) and target.startswith("/console/") and "//" not in target and "\\" not in target:
        return target
    return "/console/inbox"


def _login_page(
    request: Request, runtime: ConsoleRuntime, *, next_path: str, error: str | None, status: int = 200
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = runtime.templates.TemplateResponse(
        request,
        "login.html",
        {
            "next": next_path,
            "error": error,
            "login_csrf": nonce,
            "oidc": runtime.oidc.enabled,
            "trial": runtime.protocol.trial_id,
            "session": None,
            "flash": take_flash(request, runtime),
        },
        status_code=status,
    )
    set_cookie(
        response, request, runtime, LOGIN_COOKIE, sign(runtime.settings.console_secret, "login", {"n": nonce}), 3600
    )
    response.delete_cookie(FLASH_COOKIE, path="/console")
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form(request: Request, runtime: Runtime, next: str = "/console/inbox") -> Response:
    if session_of(request, runtime) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, runtime, next_path=safe_next(next), error=None)


def _from_browser(request: Request) -> bool:
    return bool(request.headers.get("origin") or request.headers.get("sec-fetch-site"))


@router.post("/login", include_in_schema=False)
async def login(request: Request, runtime: Runtime) -> Response:
    """Login CSRF: a browser must send the sign-in form's own token; a script (no Origin, no Sec-Fetch-*) may
    post its token directly, since forging a sign-in needs someone else's browser."""
    form = await request.form()
    next_path = safe_next(form.get("next"))
    check_origin(request, runtime)
    expected = unsign(runtime.settings.console_secret, "login", request.cookies.get(LOGIN_COOKIE))
    sent = form.get("csrf_token")
    csrf_ok = expected is not None and isinstance(sent, str) and hmac.compare_digest(sent, str(expected.get("n", "")))
    if not csrf_ok and _from_browser(request):
        return _login_page(
            request, runtime, next_path=next_path, error="The sign-in form expired; please try again.", status=403
        )
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    user = next((u for t, u in runtime.tokens.items() if hmac.compare_digest(t.encode(), token.encode())), None)
    if user is None:
        return _login_page(request, runtime, next_path=next_path, error="Unknown token.", status=401)
    session = new_session(user=user.user, role=user.role, token=token, now=runtime.clock.now())
    response = RedirectResponse(next_path, status_code=303)
    keep_session(response, request, runtime, session)
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, _token = signed
    await checked_form(request, runtime, session)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    flash(response, request, runtime, "info", f"Signed out {session.user}.")
    return response


async def _oidc_metadata(runtime: ConsoleRuntime) -> dict[str, Any]:
    oidc = runtime.oidc
    if not runtime.oidc_metadata:
        found: dict[str, Any] = {}
        if not (oidc.authorization_endpoint and oidc.token_endpoint and oidc.userinfo_endpoint):
            url = f"{str(oidc.issuer).rstrip('/')}/.well-known/openid-configuration"
            response = await runtime.client.get(url)
            response.raise_for_status()
            found = response.json()
        runtime.oidc_metadata.update(
            {
                "authorization_endpoint": oidc.authorization_endpoint or found["authorization_endpoint"],
                "token_endpoint": oidc.token_endpoint or found["token_endpoint"],
                "userinfo_endpoint": oidc.userinfo_endpoint or found["userinfo_endpoint"],
            }
        )
    return runtime.oidc_metadata


def _callback_url(request: Request, runtime: ConsoleRuntime) -> str:
    base = runtime.settings.console_url or str(request.base_url)
    return f"{base.rstrip('/')}/console/oidc/callback"


@router.get("/oidc/login", include_in_schema=False)
async def oidc_login(request: Request, runtime: Runtime, next: str = "/console/inbox") -> Response:
    if not runtime.oidc.enabled:
        raise Refused(404, "Single sign-on is not configured (SENTINEL_OIDC_ISSUER, SENTINEL_OIDC_CLIENT_ID).")
    metadata = await _oidc_metadata(runtime)
    state, nonce = generate_token(32), generate_token(32)
    url = prepare_grant_uri(
        metadata["authorization_endpoint"],
        runtime.oidc.client_id,
        "code",
        redirect_uri=_callback_url(request, runtime),
        scope=runtime.oidc.scope,
        state=state,
        nonce=nonce,
    )
    response = RedirectResponse(url, status_code=303)
    value = sign(runtime.settings.console_secret, "oidc", {"s": state, "n": nonce, "next": safe_next(next)})
    set_cookie(response, request, runtime, OIDC_COOKIE, value, 600)
    return response


@router.get("/oidc/callback", include_in_schema=False)
async def oidc_callback(request: Request, runtime: Runtime, code: str = "", state: str = "") -> Response:
    """Code for tokens at the provider, the user from its userinfo endpoint, then their API token's session."""
    if not runtime.oidc.enabled:
        raise Refused(404, "Single sign-on is not configured.")
    pending = unsign(runtime.settings.console_secret, "oidc", request.cookies.get(OIDC_COOKIE))
    if pending is None or not code or not hmac.compare_digest(state, str(pending.get("s", ""))):
        raise Refused(400, "The single sign-on answer does not match a sign-in started here; start again.")
    metadata = await _oidc_metadata(runtime)
    exchanged = await runtime.client.post(
        metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": _callback_url(request, runtime),
            "client_id": runtime.oidc.client_id,
            "client_secret": runtime.oidc.client_secret or "",
        },
    )
    if exchanged.status_code != 200:
        raise Refused(401, "The identity provider refused the sign-in.")
    access = exchanged.json().get("access_token")
    info = await runtime.client.get(metadata["userinfo_endpoint"], headers={"authorization": f"Bearer {access}"})
    if info.status_code != 200:
        raise Refused(401, "The identity provider did not say who you are.")
    claims = info.json()
    name = runtime.oidc.users.get(str(claims.get("email", ""))) or runtime.oidc.users.get(str(claims.get("sub", "")))
    found = next(((t, u) for t, u in runtime.tokens.items() if name and u.user == name), None)
    if found is None:
        raise Refused(403, "You signed in, but no console user is configured for you (SENTINEL_OIDC_USERS).")
    token, user = found
    session = new_session(user=user.user, role=user.role, token=token, now=runtime.clock.now(), via="oidc")
    response = RedirectResponse(safe_next(pending.get("next")), status_code=303)
    keep_session(response, request, runtime, session)
    response.delete_cookie(OIDC_COOKIE, path="/console")
    return response
