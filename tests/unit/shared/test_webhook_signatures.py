"""Standard Webhooks verification: the published test vector, tampering, replay window, key rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.webhook_signatures import SignatureError, WebhookSecret, sign, signature_headers, verify

SECRET = WebhookSecret.parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = "1614265330"
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
NOW = datetime.fromtimestamp(1614265330, tz=UTC)


def check(
    *,
    msg_id: str | None = MSG_ID,
    timestamp: str | None = TIMESTAMP,
    signature: str | None = SIGNATURE,
    body: bytes = BODY,
    now: datetime = NOW,
) -> None:
    verify(SECRET, msg_id=msg_id, timestamp=timestamp, signature_header=signature, body=body, now=now)


def test_standard_webhooks_vector_verifies() -> None:
    check()
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_changed_signature_is_refused() -> None:
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        check(signature=SIGNATURE[:-2] + "A=")


def test_changed_body_is_refused() -> None:
    with pytest.raises(SignatureError):
        check(body=b'{"test": 2432232315}')


def test_changed_id_is_refused() -> None:
    with pytest.raises(SignatureError):
        check(msg_id="msg_other")


@pytest.mark.parametrize("skew", [timedelta(minutes=5, seconds=1), timedelta(minutes=-5, seconds=-1)])
def test_timestamp_outside_replay_window_is_refused(skew: timedelta) -> None:
    with pytest.raises(SignatureError, match="replay window"):
        check(now=NOW + skew)


@pytest.mark.parametrize("skew", [timedelta(minutes=5), timedelta(minutes=-5)])
def test_timestamp_at_window_edge_is_accepted(skew: timedelta) -> None:
    check(now=NOW + skew)


def test_one_valid_signature_among_several_is_enough() -> None:
    other = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
    check(signature=f"{other} v1a,abc {SIGNATURE}")


def test_only_invalid_signatures_are_refused() -> None:
    with pytest.raises(SignatureError):
        check(signature="v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v2,abc")


def test_signature_without_version_prefix_is_refused() -> None:
    with pytest.raises(SignatureError):
        check(signature=SIGNATURE.removeprefix("v1,"))


@pytest.mark.parametrize("missing", ["msg_id", "timestamp", "signature"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_header_is_refused(missing: str, value: str | None) -> None:
    with pytest.raises(SignatureError, match="missing"):
        check(**{missing: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("timestamp", ["1614265330.5", "soon", "2021-02-25T15:02:10Z"])
def test_non_integer_timestamp_is_refused(timestamp: str) -> None:
    with pytest.raises(SignatureError, match="integer"):
        check(timestamp=timestamp)


def test_signature_headers_round_trip() -> None:
    headers = signature_headers(SECRET, "msg_1", 1614265330, b"{}")
    verify(
        SECRET,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
        signature_header=headers["webhook-signature"],
        body=b"{}",
        now=NOW,
    )


def test_other_secret_does_not_verify() -> None:
    other = WebhookSecret.parse("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    headers = signature_headers(other, MSG_ID, 1614265330, BODY)
    with pytest.raises(SignatureError):
        check(signature=headers["webhook-signature"])


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_c2hvcnQ="])
def test_unusable_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        WebhookSecret.parse(secret)
