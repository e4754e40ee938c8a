"""The console's own guarantees, with the officer APIs replaced by a recording fake: sessions (cookie flags,
expiry, revocation, sign-out), CSRF and origin checks, roles, and that every action is the API's own endpoint
called with the signed-in user's token. The real stack and a real browser: tests/e2e/test_console_browser.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.console.main import create_app
from services.console.settings import ConsoleSettings, OidcSettings
from shared.clock import FakeClock
from shared.settings import TokenTable

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
OFFICER = "officer-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
TRIAL = "NCT07212335"
ALERT = {
    "id": "al-1",
    "kind": "sae",
    "trial_id": TRIAL,
    "site_id": "101",
    "subject_id": "S-1",
    "title": "SAE: Pneumonitis (subject S-1, site 101)",
    "state": "open",
    "details": {"grade": 3, "criteria": ["hospitalization"], "awareness_at": "2026-03-01T01:00:00Z"},
    "created_at": "2026-03-01T01:00:05Z",
    "updated_at": "2026-03-01T01:00:05Z",
    "acknowledged_at": None,
    "acknowledged_by": None,
    "escalation_step": 0,
    "snoozed_until": None,
    "snoozed_by": None,
    "snooze_reason": None,
    "obligations": [
        {
            "id": "ob-1",
            "alert_id": "al-1",
            "kind": "sae_report",
            "description": "File the SAE report within 24 h of awareness",
            "clock_started_at": "2026-03-01T01:00:00Z",
            "clock_basis": "site",
            "due_at": "2026-03-02T01:00:00Z",
            "state": "open",
        }
    ],
    "deliveries": [
        {"channel": "email", "recipient": "so@x.example", "status": "sent", "attempts": 1, "last_error": None,
         "sent_at": "2026-03-01T01:00:07Z"}
    ],
    "history": [],
    "scheduled": [],
}  # fmt: skip


COHORT_A = {
    "arm": "A",
    "enrolled": 3,
    "evaluable": 2,
    "dlt_confirmed": 0,
    "dlt_suspected": 0,
    "decision": "enrolling",
    "stopping_rule": False,
    "next_arm": "B",
    "reason": "0 subject(s) with a DLT confirmed, 2/3 evaluable: 2 of 3 counted",
    "not_evaluable": 1,
    "replacements_needed": 1,
}


class FakeApis:
    """notify and safety as far as the console asks them; records every call with its bearer token."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, token, body))
        path = request.url.path
        if request.method == "GET" and path == "/v1/alerts":
            return httpx.Response(200, json=[ALERT] if request.url.params.get("state") == "open" else [])
        if request.method == "GET" and path == "/v1/alerts/al-1":
            return httpx.Response(200, json=ALERT)
        if request.method == "POST" and path == "/v1/alerts/al-1/ack":
            return httpx.Response(200, json={**ALERT, "state": "acknowledged"})
        if request.method == "POST" and path in ("/v1/alerts/al-1/snooze", "/v1/alerts/al-1/comments"):
            return httpx.Response(200, json=ALERT)
        if request.method == "GET" and path == f"/v1/trials/{TRIAL}/cohorts":
            return httpx.Response(200, json=[COHORT_A])
        if request.method == "GET" and path in (f"/v1/trials/{TRIAL}/audit", f"/v1/trials/{TRIAL}/subjects"):
            return httpx.Response(200, json=[])
        if request.method == "POST" and path.startswith("/v1/dlts/"):
            return httpx.Response(409, json={"title": "Conflict", "detail": "DLT d-1 was already confirmed by olga"})
        if request.method == "POST" and path == "/v1/obligations/ob-1/complete":
            if not body["reference"]:
                return httpx.Response(422, json={"title": "Invalid", "detail": "reference: too short"})
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"title": "Not found", "detail": f"no {path}"})

    def posts(self) -> list[tuple[str, str, str, Any]]:
        return [c for c in self.calls if c[0] == "POST"]


@pytest.fixture
def apis() -> FakeApis:
    return FakeApis()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def make_client(apis: FakeApis, clock: FakeClock, **settings: Any) -> TestClient:
    config = ConsoleSettings(
        api_tokens={OFFICER: {"user": "olga", "role": "officer"}, VIEWER: {"user": "vera", "role": "viewer"}},
        console_secret="s" * 40,
        **settings,
    )
    oidc = settings.pop("oidc", None) or OidcSettings()
    app = create_app(config, oidc=oidc, clock=clock, registry=CollectorRegistry(), transport=httpx.MockTransport(apis))
    return TestClient(app, base_url="http://console.test", follow_redirects=False)


@pytest.fixture
def client(apis: FakeApis, clock: FakeClock, clean_env: None) -> TestClient:
    return make_client(apis, clock)


def sign_in(client: TestClient, token: str) -> str:
    """Like a browser: the sign-in form first (its CSRF token), then the post; returns the session's CSRF token."""
    form = client.get("/console/login").text
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert nonce is not None
    done = client.post(
        "/console/login",
        data={"token": token, "csrf_token": nonce.group(1), "next": "/console/inbox"},
        headers={"origin": "http://console.test"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/inbox"
    page = client.get("/console/inbox").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    return csrf.group(1)


def test_no_page_without_a_session(client: TestClient) -> None:
    for path in ("/console/inbox", "/console/alerts/al-1", "/console/dlts", "/console/cohorts",
                 "/console/subjects/S-1", "/console/listings/ae?format=csv"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/console/login?next=")
    assert client.post("/console/alerts/al-1/ack", data={}).status_code == 303


def test_session_cookie_is_httponly_samesite_and_secure_behind_tls(apis: FakeApis, clock: FakeClock) -> None:
    client = make_client(apis, clock)
    client.post("/console/login", data={"token": OFFICER})  # a script: no Origin, no Sec-Fetch-*
    cookie = client.cookies.jar
    [session] = [c for c in cookie if c.name == "sentinel_console"]
    assert session.has_nonstandard_attr("HttpOnly") and not session.secure
    raw = client.post("/console/login", data={"token": OFFICER}).headers["set-cookie"]
    assert "HttpOnly" in raw and "SameSite=lax" in raw and "Path=/console" in raw and "Secure" not in raw
    behind_tls = client.post("/console/login", data={"token": OFFICER}, headers={"x-forwarded-proto": "https"})
    assert "Secure" in behind_tls.headers["set-cookie"]
    configured = make_client(apis, clock, console_url="https://sentinel.example.org")
    assert "Secure" in configured.post("/console/login", data={"token": OFFICER}).headers["set-cookie"]


def test_sign_in_refuses_an_unknown_token_and_a_browser_post_without_the_forms_token(client: TestClient) -> None:
    assert client.post("/console/login", data={"token": "nope-nope-nope-nope"}).status_code == 401
    forged = client.post("/console/login", data={"token": OFFICER}, headers={"origin": "http://console.test"})
    assert forged.status_code == 403 and "sentinel_console=" not in forged.headers.get("set-cookie", "")
    foreign = client.post("/console/login", data={"token": OFFICER}, headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403


def test_sign_in_never_redirects_off_the_console(client: TestClient) -> None:
    response = client.post("/console/login", data={"token": OFFICER, "next": "//evil.example/x"})
    assert response.headers["location"] == "/console/inbox"


def test_the_inbox_shows_the_clock_and_who_was_paged(client: TestClient) -> None:
    sign_in(client, OFFICER)
    page = client.get("/console/inbox").text
    assert "22 h 00 min left" in page and 'data-due="2026-03-02T01:00:00+00:00"' in page
    assert "so@x.example" in page and "2026-03-01 01:00 UTC" in page
    assert 'data-action="ack"' in page


def test_an_action_is_the_apis_endpoint_with_the_users_token(client: TestClient, apis: FakeApis) -> None:
    csrf = sign_in(client, OFFICER)
    done = client.post("/console/alerts/al-1/ack", data={"csrf_token": csrf, "back": "/console/inbox"})
    assert done.status_code == 303 and done.headers["location"] == "/console/inbox"
    assert apis.posts() == [("POST", "/v1/alerts/al-1/ack", OFFICER, {"comment": None})]
    assert "Acknowledged" in client.get("/console/inbox").text  # the flash message, shown once
    refused = client.post(
        "/console/obligations/ob-1/complete", data={"csrf_token": csrf, "reference": "", "back": "/console/inbox"}
    )
    assert refused.status_code == 303
    assert "reference: too short" in client.get("/console/inbox").text


def test_a_form_without_its_csrf_token_or_from_another_site_is_refused(client: TestClient, apis: FakeApis) -> None:
    csrf = sign_in(client, OFFICER)
    assert client.post("/console/alerts/al-1/ack", data={}).status_code == 403
    assert client.post("/console/alerts/al-1/ack", data={"csrf_token": "x" * 43}).status_code == 403
    foreign = client.post("/console/alerts/al-1/ack", data={"csrf_token": csrf}, headers={"origin": "https://e.vil"})
    assert foreign.status_code == 403
    assert apis.posts() == []


def test_a_viewer_sees_no_buttons_and_cannot_act(apis: FakeApis, clock: FakeClock, clean_env: None) -> None:
    client = make_client(apis, clock)
    csrf = sign_in(client, VIEWER)
    page = client.get("/console/alerts/al-1").text
    assert "data-action" not in page and "Acknowledge" not in page and "Snooze" not in page
    assert client.post("/console/alerts/al-1/ack", data={"csrf_token": csrf}).status_code == 403
    assert apis.posts() == []


def test_sessions_expire_when_idle_and_end_when_the_token_is_revoked(
    apis: FakeApis, clock: FakeClock, clean_env: None
) -> None:
    client = make_client(apis, clock, session_idle_minutes=30, session_max_hours=2)
    sign_in(client, OFFICER)
    clock.advance(timedelta(minutes=29))
    assert client.get("/console/inbox").status_code == 200  # activity slides the idle expiry
    clock.advance(timedelta(minutes=29))
    assert client.get("/console/inbox").status_code == 200
    clock.advance(timedelta(minutes=31))
    assert client.get("/console/inbox").status_code == 303
    sign_in(client, OFFICER)
    for _ in range(5):
        clock.advance(timedelta(minutes=25))
        client.get("/console/inbox")
    assert client.get("/console/inbox").status_code == 303  # at most session_max_hours, however active
    revoked = make_client(apis, clock)
    sign_in(revoked, OFFICER)
    settings = revoked.app.state.runtime.settings  # type: ignore[attr-defined]
    settings.api_tokens = TokenTable({t: u for t, u in settings.api_tokens.items() if t != OFFICER})
    assert revoked.get("/console/inbox").status_code == 303


def test_sign_out_ends_the_session(client: TestClient) -> None:
    csrf = sign_in(client, OFFICER)
    assert client.post("/console/logout", data={}).status_code == 403  # sign-out is a form too
    out = client.post("/console/logout", data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert client.get("/console/inbox").status_code == 303


def test_single_sign_on_maps_the_identity_to_an_api_user(apis: FakeApis, clock: FakeClock, clean_env: None) -> None:
    def idp(request: httpx.Request) -> httpx.Response:
        if request.url.host == "idp.test" and request.url.path == "/token":
            assert b"code=the-code" in request.content and b"client_secret=shh" in request.content
            return httpx.Response(200, json={"access_token": "at-1", "token_type": "Bearer"})
        if request.url.host == "idp.test" and request.url.path == "/userinfo":
            assert request.headers["authorization"] == "Bearer at-1"
            return httpx.Response(200, json={"sub": "u-7", "email": "olga@hospital.example"})
        return apis(request)

    oidc = OidcSettings(
        issuer="https://idp.test",
        client_id="sentinel-console",
        client_secret="shh",
        authorization_endpoint="https://idp.test/authorize",
        token_endpoint="https://idp.test/token",
        userinfo_endpoint="https://idp.test/userinfo",
        users={"olga@hospital.example": "olga"},
    )
    config = ConsoleSettings(
        api_tokens={OFFICER: {"user": "olga", "role": "officer"}}, console_secret="s" * 40,
        console_url="https://console.test",
    )  # fmt: skip
    app = create_app(config, oidc=oidc, clock=clock, registry=CollectorRegistry(), transport=httpx.MockTransport(idp))
    client = TestClient(app, base_url="https://console.test", follow_redirects=False)
    assert "single sign-on" in client.get("/console/login").text
    start = client.get("/console/oidc/login")
    location = httpx.URL(start.headers["location"])
    assert location.host == "idp.test" and location.params["client_id"] == "sentinel-console"
    assert location.params["redirect_uri"] == "https://console.test/console/oidc/callback"
    state = location.params["state"]
    assert client.get("/console/oidc/callback", params={"code": "the-code", "state": "wrong"}).status_code == 400
    done = client.get("/console/oidc/callback", params={"code": "the-code", "state": state})
    assert done.status_code == 303 and done.headers["location"] == "/console/inbox"
    assert client.get("/console/inbox").status_code == 200
    assert ("GET", "/v1/alerts", OFFICER, None) in apis.calls  # the APIs see olga's own token


def test_snooze_comment_and_dlt_decisions_pass_through_with_reason_and_expiry(
    client: TestClient, apis: FakeApis
) -> None:
    csrf = sign_in(client, OFFICER)
    client.post("/console/alerts/al-1/snooze", data={"csrf_token": csrf, "hours": "2", "reason": "in theatre"})
    client.post("/console/alerts/al-1/comment", data={"csrf_token": csrf, "text": "called the site"})
    assert (
        client.post("/console/alerts/al-1/snooze", data={"csrf_token": csrf, "hours": "999", "reason": "x"}).status_code
        == 303
    )
    decided = client.post(
        "/console/dlts/d-1/confirm", data={"csrf_token": csrf, "reason": "CT", "expected_state": "suspected"}
    )
    assert decided.status_code == 303 and decided.headers["location"] == "/console/dlts/d-1"
    assert apis.posts() == [
        ("POST", "/v1/alerts/al-1/snooze", OFFICER, {"reason": "in theatre", "until": "2026-03-01T05:00:00+00:00"}),
        ("POST", "/v1/alerts/al-1/comments", OFFICER, {"text": "called the site"}),
        ("POST", "/v1/dlts/d-1/confirm", OFFICER, {"reason": "CT", "expected_state": "suspected"}),
    ]  # the 999 h snooze never reached the API
    shown = client.get("/console/inbox").text
    assert "already confirmed by olga" in shown  # the API's refusal, told to the officer


def test_the_cohort_board_shows_the_replacements_an_arm_needs(client: TestClient) -> None:
    """A subject who received 1 of the planned infusions is not evaluable: the SRC sees how many to replace."""
    sign_in(client, VIEWER)
    page = client.get("/console/cohorts").text
    assert "1 not evaluable: 1 replacement(s) needed" in page
    assert "every planned infusion, the DLT window over and the protocol's required visits done" in page
