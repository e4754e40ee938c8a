"""The sources file (validated with paths), authentication schemes with real vectors, rate limits, size limits,
record-version idempotency for canonical events, and the delivery-id purge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import Session, select

from services.ingest.authentication import verify_github
from services.ingest.models import AcceptedDelivery
from services.ingest.purge import purge_once
from services.ingest.sources import SourcesError, canonical_sources, check_sources_command, merge_sources, parse_sources
from shared.clock import FakeClock
from shared.webhook_signatures import SignatureError, WebhookSecret, signature_headers, verify
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import FIXTURES, SECRET, TRIAL, AppFactory, webhook_id

# Standard Webhooks test vector (standard-webhooks python tests, test_sign_function)
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = "1614265330"
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SW_TAMPERED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
# GitHub docs test values ("Validating webhook deliveries")
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


BAD_FORM = {"type": "ae", "items": {"X": "trm"}}
AE_MAP = {"forms": {"f": {"type": "ae", "items": {"t": "term"}}}}


def problems(document: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SourcesError) as caught:
        parse_sources(document, env or {})
    return caught.value.problems


def test_fixture_sources_files_are_valid() -> None:
    import yaml

    assert set(parse_sources(yaml.safe_load((FIXTURES / "odm/sources.yaml").read_text()), {})) == {"oc-cart", "rave"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"sources": {"a": {"kind": "xml", "auth": {"secret": SECRET}}}}, "sources.a.kind"),
        ({"sources": {"a": {"kind": "fhir"}}}, "sources.a.auth"),
        ({"sources": {"a": {"kind": "fhir", "auth": {"secret": SECRET, "secret_env": "X"}}}}, "sources.a.auth"),
        ({"sources": {"a": {"kind": "odm", "auth": {"secret": SECRET}}}}, "mapping.forms"),
        (
            {
                "sources": {
                    "a": {
                        "kind": "odm",
                        "auth": {"secret": SECRET},
                        "mapping": {"forms": {"AE": {"type": "ae", "items": {"X": "trm"}}}},
                    }
                }
            },
            "sources.a.mapping.forms.AE",
        ),
        (
            {"sources": {"a": {"kind": "fhir", "timezone": "Mars/Olympus", "auth": {"secret": SECRET}}}},
            "sources.a.timezone",
        ),
        ({"sources": {"bad id!": {"kind": "fhir", "auth": {"secret": SECRET}}}}, "bad id!"),
        (
            {
                "sources": {
                    "r": {
                        "kind": "redcap",
                        "trial": TRIAL,
                        "auth": {"secret": SECRET},
                        "mapping": {"forms": {"f": {"type": "ae", "items": {"t": "term"}}}},
                    }
                }
            },
            "redcap",
        ),
        ({"sources": {"a": {"kind": "fhir", "auth": {"scheme": "bearer", "secret": "token"}}}}, "placeholder"),
        ({"sources": {"a": {"kind": "fhir", "auth": {"secret": "whsec_!!notbase64!!!!!!"}}}}, "sources.a.auth.secret"),
    ],
)
def test_errors_are_path_qualified(document: Any, expected: str) -> None:
    found = problems(document)
    assert any(expected in p for p in found), found


def test_secrets_and_tokens_may_come_from_the_environment() -> None:
    document = {"sources": {"a": {"kind": "fhir", "auth": {"scheme": "github", "secret_env": "GH_SECRET"}}}}
    assert problems(document) == ["sources.a.auth.secret_env: environment variable GH_SECRET is not set"]
    source = parse_sources(document, {"GH_SECRET": GH_SECRET})["a"]
    assert source.credential.value.get_secret_value() == GH_SECRET
    assert GH_SECRET not in repr(source)


def test_webhook_secrets_env_stays_a_canonical_source_and_clashes_are_refused() -> None:
    env_sources = canonical_sources({"edc": SecretStr(SECRET)})
    assert env_sources["edc"].config.kind == "canonical"
    file_sources = parse_sources({"sources": {"edc": {"kind": "fhir", "auth": {"secret": SECRET}}}}, {})
    with pytest.raises(SourcesError):
        merge_sources(file_sources, env_sources)


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text((FIXTURES / "odm/sources.yaml").read_text())
    assert check_sources_command(good) == 0
    assert "POST /v1/sources/rave/odm (github)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  a:\n    kind: odm\n")
    assert check_sources_command(bad) == 1
    assert "sources.a.auth" in capsys.readouterr().out


def test_standard_webhooks_vector() -> None:
    secret = WebhookSecret.parse(SW_SECRET)
    sent = datetime.fromtimestamp(int(SW_TIMESTAMP), UTC)
    args = {"msg_id": SW_ID, "timestamp": SW_TIMESTAMP, "body": SW_BODY}
    verify(secret, signature_header=SW_SIGNATURE, now=sent, **args)  # type: ignore[arg-type]
    with pytest.raises(SignatureError):
        verify(secret, signature_header=SW_TAMPERED, now=sent, **args)  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="replay window"):
        verify(secret, signature_header=SW_SIGNATURE, now=sent + timedelta(minutes=6), **args)  # type: ignore[arg-type]


def test_github_vector() -> None:
    verify_github(GH_SECRET, signature_header=GH_SIGNATURE, body=GH_BODY)
    with pytest.raises(SignatureError):
        verify_github(GH_SECRET, signature_header=GH_SIGNATURE, body=b"Hello, World?")
    with pytest.raises(SignatureError):
        verify_github(GH_SECRET, signature_header=None, body=GH_BODY)


def canonical_ae(n: int, version: int, grade: int = 2) -> dict[str, Any]:
    return {
        "id": f"m-{n}",
        "type": "ae",
        "study": TRIAL,
        "site": "101",
        "subject": "101-001",
        "data": {"ae_id": "AE-1", "version": version, "term": "Fever", "grade": grade},
    }


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client(
        {
            "sources": {
                "edc": {"kind": "canonical", "trial": TRIAL, "auth": {"secret": SECRET}},
                "gh": {
                    "kind": "canonical",
                    "auth": {"scheme": "github", "secret": GH_SECRET},
                    "rate_limit": {"requests_per_minute": 60, "burst": 2},
                    "max_body_bytes": 2048,
                },
            }
        }
    )


def post_signed(client: TestClient, clock: FakeClock, document: Any, source: str = "edc") -> Any:
    raw = json.dumps(document).encode()
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id(raw), int(clock.now().timestamp()), raw)
    return client.post(f"/v1/sources/{source}/events", content=raw, headers=headers)


def post_github(client: TestClient, raw: bytes) -> Any:
    import hashlib
    import hmac

    signature = "sha256=" + hmac.new(GH_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return client.post("/v1/sources/gh/events", content=raw, headers={"x-hub-signature-256": signature})


def test_github_scheme_rate_limit_and_size_limit(client: TestClient, clock: FakeClock) -> None:
    assert post_github(client, json.dumps(canonical_ae(1, 1)).encode()).status_code == 202
    assert post_github(client, json.dumps(canonical_ae(2, 2)).encode()).status_code == 202
    limited = post_github(client, json.dumps(canonical_ae(3, 3)).encode())
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    clock.advance(timedelta(seconds=1))
    assert post_github(client, json.dumps(canonical_ae(3, 3)).encode()).status_code == 202
    clock.advance(timedelta(seconds=10))
    big = json.dumps({**canonical_ae(4, 4), "pad": "x" * 3000}).encode()
    assert post_github(client, big).status_code == 413
    clock.advance(timedelta(seconds=10))
    wrong = client.post("/v1/sources/gh/events", content=b"{}", headers={"x-hub-signature-256": "sha256=00"})
    assert wrong.status_code == 401


def test_older_version_after_a_newer_one_is_stale(
    client: TestClient, clock: FakeClock, publisher: FakePublisher
) -> None:
    assert post_signed(client, clock, canonical_ae(1, 2, grade=3)).status_code == 202
    late = post_signed(client, clock, canonical_ae(2, 1, grade=1))
    assert late.status_code == 200 and late.json()["stale"] == ["m-2"]
    assert len(publisher.messages) == 1


def test_other_trial_and_wrong_endpoint_are_refused(client: TestClient, clock: FakeClock) -> None:
    other = {**canonical_ae(1, 1), "study": "NCT00000000"}
    problem = post_signed(client, clock, other).json()
    assert problem["status"] == 422 and problem["errors"][0]["pointer"] == "/study"
    wrong = client.post("/v1/sources/edc/fhir", content=b"{}")
    assert wrong.status_code == 404 and "/v1/sources/edc/events" in wrong.json()["detail"]


def test_delivery_ids_are_purged_after_the_retention(client: TestClient, clock: FakeClock) -> None:
    post_signed(client, clock, canonical_ae(1, 1))
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    clock.advance(timedelta(days=4))
    assert purge_once(runtime) == 0  # default retention is 7 days, at least 4
    clock.advance(timedelta(days=3, seconds=1))
    assert purge_once(runtime) == 1
    with Session(runtime.engine) as session:
        assert session.exec(select(AcceptedDelivery)).all() == []
    replay = post_signed(client, clock, canonical_ae(1, 1))
    assert replay.status_code == 200 and replay.json()["stale"] == ["m-1"]  # the version still stops it
