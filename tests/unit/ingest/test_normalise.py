"""Parsing posted bodies into canonical events, with JSON pointers for every error, and into envelopes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.ingest.normalise import MAX_EVENTS_PER_REQUEST, InvalidBody, parse_body, to_envelope
from shared.events import CLINICAL_ADAPTER, AeReported, LabResulted, SubjectEnrolled, deterministic_id
from shared.problems import json_pointer

RECEIVED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def event(n: int = 1, type_: str = "ae", **data: Any) -> dict[str, Any]:
    payloads: dict[str, dict[str, Any]] = {
        "ae": {"ae_id": f"AE-{n}", "version": 1, "term": "Fever", "grade": 2},
        "lab": {"result_id": f"R-{n}", "test": "NEUT", "value": "0.4", "collected_at": "2026-03-01T06:00:00Z"},
        "enrollment": {"arm": "A", "enrolled_at": "2026-02-10"},
        "dose": {"dose_id": f"D-{n}", "number": 1, "administered_at": "2026-02-12T10:00:00+01:00"},
    }
    return {
        "id": f"msg-{n}",
        "type": type_,
        "study": "NCT07212335",
        "site": "SITE-1",
        "subject": "S-001",
        "data": {**payloads[type_], **data},
    }


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def pointers(raw: bytes) -> list[str]:
    with pytest.raises(InvalidBody) as caught:
        parse_body(raw)
    return [json_pointer(err["loc"]) for err in caught.value.errors]


def test_single_event() -> None:
    [parsed] = parse_body(body(event()))
    assert parsed.header.id == "msg-1"
    assert parsed.data.ae_id == "AE-1"  # type: ignore[attr-defined]


def test_batch_of_events_keeps_order() -> None:
    parsed = parse_body(body({"events": [event(1), event(2, "lab"), event(3, "enrollment"), event(4, "dose")]}))
    assert [p.header.id for p in parsed] == ["msg-1", "msg-2", "msg-3", "msg-4"]
    assert [type(p.data).__name__ for p in parsed] == ["AeData", "LabData", "EnrollmentData", "DoseData"]


def test_error_pointer_names_the_field_in_the_batch() -> None:
    bad = event(2, grade=9)
    assert pointers(body({"events": [event(1), bad]})) == ["/events/1/data/grade"]


def test_every_invalid_event_is_reported() -> None:
    first = event(1)
    del first["subject"]
    result = pointers(body({"events": [first, event(2), event(3, grade=0)]}))
    assert result == ["/events/0/subject", "/events/2/data/grade"]


def test_error_pointer_for_a_single_event() -> None:
    assert pointers(body(event(awareness_at="2026-03-01T08:00:00"))) == ["/data/awareness_at"]


def test_unknown_type_points_at_type() -> None:
    assert pointers(body(event(type_="ae") | {"type": "vital_signs"})) == ["/type"]


def test_repeated_id_in_one_request_is_refused() -> None:
    assert pointers(body({"events": [event(1), event(2) | {"id": "msg-1"}]})) == ["/events/1/id"]


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b""])
def test_invalid_json_points_at_the_body(raw: bytes) -> None:
    assert pointers(raw) == [""]


@pytest.mark.parametrize("events", [[], {}, "x"])
def test_events_must_be_a_non_empty_list(events: Any) -> None:
    assert pointers(body({"events": events})) == ["/events"]


def test_too_many_events_are_refused() -> None:
    many = [event(n) for n in range(MAX_EVENTS_PER_REQUEST + 1)]
    assert pointers(body({"events": many})) == ["/events"]


@pytest.mark.parametrize("document", [[1, 2], "text", 42, None])
def test_body_that_is_not_an_object_is_refused(document: Any) -> None:
    with pytest.raises(InvalidBody):
        parse_body(body(document))


def test_json_numbers_are_exact_decimals() -> None:
    raw = b'{"id": "m", "type": "lab", "study": "T", "site": "S", "subject": "X", "data": ' + (
        b'{"result_id": "R", "test": "NEUT", "value": 0.10, "lln": 1.80, "collected_at": "2026-03-01T06:00:00Z"}}'
    )
    [parsed] = parse_body(raw)
    assert parsed.data.value == "0.10"  # type: ignore[attr-defined]
    assert str(parsed.data.lln) == "1.80"  # type: ignore[attr-defined]


def test_to_envelope_has_deterministic_id_and_attributes() -> None:
    [parsed] = parse_body(body(event(awareness_at="2026-03-01T07:30:00Z")))
    envelope = to_envelope("edc", parsed, RECEIVED)
    again = to_envelope("edc", parsed, RECEIVED + timedelta(hours=1))
    assert isinstance(envelope, AeReported)
    assert envelope.id == again.id == deterministic_id("inbound", "edc", "msg-1")
    assert envelope.id != to_envelope("other-edc", parsed, RECEIVED).id
    assert envelope.source == "/sources/edc"
    assert (envelope.trialid, envelope.siteid, envelope.subject) == ("NCT07212335", "SITE-1", "S-001")
    assert envelope.senderid == "msg-1"
    assert envelope.receivedat == RECEIVED
    assert envelope.time == datetime(2026, 3, 1, 7, 30, tzinfo=UTC)


def test_ae_without_awareness_is_timed_at_receipt() -> None:
    [parsed] = parse_body(body(event()))
    assert to_envelope("edc", parsed, RECEIVED).time == RECEIVED


def test_lab_is_timed_at_collection() -> None:
    [parsed] = parse_body(body(event(type_="lab")))
    envelope = to_envelope("edc", parsed, RECEIVED)
    assert isinstance(envelope, LabResulted)
    assert envelope.time == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def test_dose_is_timed_at_administration_with_its_offset() -> None:
    [parsed] = parse_body(body(event(type_="dose")))
    envelope = to_envelope("edc", parsed, RECEIVED)
    assert envelope.time == datetime(2026, 2, 12, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert envelope.time == datetime(2026, 2, 12, 9, 0, tzinfo=UTC)


def test_enrollment_is_timed_at_midnight_utc_of_the_day() -> None:
    [parsed] = parse_body(body(event(type_="enrollment")))
    envelope = to_envelope("edc", parsed, RECEIVED)
    assert isinstance(envelope, SubjectEnrolled)
    assert envelope.time == datetime(2026, 2, 10, tzinfo=UTC)


@pytest.mark.parametrize("type_", ["ae", "lab", "dose", "enrollment"])
def test_an_envelope_built_without_validation_is_the_validated_one_byte_for_byte(type_: str) -> None:
    [parsed] = parse_body(body(event(type_=type_)))
    envelope = to_envelope("edc", parsed, RECEIVED)
    validated = type(envelope).model_validate(envelope.model_dump())
    assert envelope.model_dump_json() == validated.model_dump_json()
    assert CLINICAL_ADAPTER.validate_json(envelope.model_dump_json()) == validated
    assert to_envelope("edc", parsed, RECEIVED) is not envelope  # a fresh envelope each time


def test_a_naive_receipt_time_is_refused_not_published() -> None:
    [parsed] = parse_body(body(event(type_="lab")))
    with pytest.raises(ValueError, match="timezone-aware"):
        to_envelope("edc", parsed, RECEIVED.replace(tzinfo=None))
