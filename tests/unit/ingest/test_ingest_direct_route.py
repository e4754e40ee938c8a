"""The canonical events route served straight from ASGI answers exactly as FastAPI's route does.

Each request below is sent to two apps built from the same settings: one without a span exporter (the direct
route serves the post) and one recording spans (every request goes through FastAPI's own stack). Status,
content type, Retry-After and body must be the same, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.ingest.direct_route import DirectRoute
from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from shared.clock import FakeClock
from shared.tracing import Tracing, build_tracing
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import webhook_id

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
URL = "/v1/sources/edc/events"


def ae_event(n: int = 1, **data: Any) -> dict[str, Any]:
    return {
        "id": f"msg-{n}",
        "type": "ae",
        "study": "NCT07212335",
        "site": "SITE-1",
        "subject": "S-007",
        "data": {"ae_id": f"AE-{n}", "version": 1, "term": "Fever", "grade": 3, **data},
    }


class Pair:
    """The same settings served two ways; `both` sends one request to each and returns both answers."""

    def __init__(self, direct: TestClient, routed: TestClient, publishers: tuple[FakePublisher, FakePublisher]):
        self.direct = direct
        self.routed = routed
        self.publishers = publishers

    def both(self, send: Callable[[TestClient], Any]) -> tuple[Any, Any]:
        return send(self.direct), send(self.routed)


@pytest.fixture
def pair(clean_env: None, tmp_path: Path, clock: FakeClock) -> Iterator[Pair]:
    def app(name: str, publisher: FakePublisher, tracing: Tracing | None) -> TestClient:
        settings = IngestSettings(
            webhook_secrets={"edc": SECRET},
            var_dir=tmp_path / name,
            clinical_topic="test.clinical.v1",
            max_body_bytes=2048,
        )
        return TestClient(
            create_app(settings, publisher=publisher, clock=clock, registry=CollectorRegistry(), tracing=tracing),
            raise_server_exceptions=False,
        )

    publishers = (FakePublisher(), FakePublisher())
    tracing = build_tracing("ingest", {})  # injected: the app records spans, so nothing bypasses FastAPI
    with app("direct", publishers[0], None) as direct, app("routed", publishers[1], tracing) as routed:
        assert [m.cls for m in direct.app.user_middleware].count(DirectRoute) == 1  # type: ignore[attr-defined]
        assert DirectRoute not in [m.cls for m in routed.app.user_middleware]  # type: ignore[attr-defined]
        yield Pair(direct, routed, publishers)
    tracing.shutdown()


def signed(clock: FakeClock, raw: bytes, *, age: timedelta = timedelta(0)) -> dict[str, str]:
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id(raw), int((clock.now() - age).timestamp()), raw)
    return {**headers, "content-type": "application/json"}


def assert_same(answers: tuple[Any, Any]) -> Any:
    direct, routed = answers
    assert direct.status_code == routed.status_code, (direct.text, routed.text)
    assert direct.headers.get("content-type") == routed.headers.get("content-type")
    assert direct.headers.get("retry-after") == routed.headers.get("retry-after")
    assert direct.content == routed.content
    return direct


BODIES: dict[str, Callable[[FakeClock], tuple[bytes, dict[str, str]]]] = {
    "accepted": lambda clock: (raw := json.dumps(ae_event()).encode(), signed(clock, raw)),
    "batch": lambda clock: (raw := json.dumps({"events": [ae_event(1), ae_event(2)]}).encode(), signed(clock, raw)),
    "invalid field": lambda clock: (raw := json.dumps(ae_event(grade=9)).encode(), signed(clock, raw)),
    "not json": lambda clock: (raw := b"{not json", signed(clock, raw)),
    "empty batch": lambda clock: (raw := b'{"events": []}', signed(clock, raw)),
    "wrong trial": lambda clock: (
        raw := json.dumps({**ae_event(), "study": "NCT00000000"}).encode(),
        signed(clock, raw),
    ),
    "stale signature": lambda clock: (raw := json.dumps(ae_event()).encode(), signed(clock, raw, age=timedelta(1))),
    "unsigned": lambda clock: (json.dumps(ae_event()).encode(), {"content-type": "application/json"}),
    "too large": lambda clock: (raw := json.dumps(ae_event(term="x" * 4000)).encode(), signed(clock, raw)),
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_every_answer_is_the_same_as_fastapis(pair: Pair, clock: FakeClock, case: str) -> None:
    raw, headers = BODIES[case](clock)
    assert_same(pair.both(lambda client: client.post(URL, content=raw, headers=headers)))


def test_a_resend_is_a_duplicate_either_way_and_published_once(pair: Pair, clock: FakeClock) -> None:
    raw = json.dumps(ae_event()).encode()
    first = assert_same(pair.both(lambda client: client.post(URL, content=raw, headers=signed(clock, raw))))
    again = assert_same(pair.both(lambda client: client.post(URL, content=raw, headers=signed(clock, raw))))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["duplicates"] == ["msg-1"]
    assert [len(p.messages) for p in pair.publishers] == [1, 1]


@pytest.mark.parametrize(
    "path", ["/v1/sources/nobody/events", "/v1/sources/bad%20id/events", "/v1/sources/edc/events/extra"]
)
def test_unknown_and_malformed_sources_are_answered_alike(pair: Pair, clock: FakeClock, path: str) -> None:
    raw = json.dumps(ae_event()).encode()
    answer = assert_same(pair.both(lambda client: client.post(path, content=raw, headers=signed(clock, raw))))
    assert answer.status_code in (404, 422)


def test_other_methods_still_reach_fastapi(pair: Pair) -> None:
    answer = assert_same(pair.both(lambda client: client.get(URL)))
    assert answer.status_code == 405


def test_broker_down_is_the_same_503(pair: Pair, clock: FakeClock) -> None:
    for publisher in pair.publishers:
        publisher.down = True
    raw = json.dumps(ae_event()).encode()
    answer = assert_same(pair.both(lambda client: client.post(URL, content=raw, headers=signed(clock, raw))))
    assert answer.status_code == 503
    assert answer.headers["retry-after"]


def test_an_unexpected_error_is_a_logged_500_problem_not_a_dropped_connection(
    pair: Pair, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    for publisher in pair.publishers:
        monkeypatch.setattr(publisher, "publish", broken)
    raw = json.dumps(ae_event()).encode()
    answer = assert_same(pair.both(lambda client: client.post(URL, content=raw, headers=signed(clock, raw))))
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"


def test_direct_posts_are_counted_under_the_route_template(pair: Pair, clock: FakeClock) -> None:
    raw = json.dumps(ae_event()).encode()
    pair.direct.post(URL, content=raw, headers=signed(clock, raw))
    metrics = pair.direct.get("/metrics").text
    assert 'route="/v1/sources/{source_id}/events",status="202"' in metrics


def test_the_route_is_still_documented(pair: Pair) -> None:
    schema = pair.direct.get("/openapi.json").json()
    assert "post" in schema["paths"]["/v1/sources/{source_id}/events"]
