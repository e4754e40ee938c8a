"""The hot path's shortcuts answer exactly what the general machinery they replace answered."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from services.ingest.bounds import MAX_DECIMAL_PLACES, MAX_MAGNITUDE, MAX_SIGNIFICANT_DIGITS, number_problem
from services.ingest.intake import IngestResult, Verdict
from services.ingest.normalise import (
    CanonicalEvent,
    InvalidBody,
    _parse_each,
    _parse_valid_batch,
    _refuse_repeated_ids,
    load_json,
    parse_body,
)
from services.ingest.routes import result_response


@pytest.mark.parametrize(
    ("verdict", "ignored"),
    [
        (Verdict(accepted=["msg-1"]), ()),
        (Verdict(accepted=["a", "b"], duplicates=["c"], stale=["d"]), ["e"]),
        (Verdict(duplicates=["dup"]), ()),
        (Verdict(accepted=['quote " and \\ backslash', "naïve-ü-✓", "tab\there"]), ("ignored-✓",)),
        (Verdict(), ()),
    ],
)
def test_the_result_is_the_bytes_and_status_the_model_response_gave(verdict: Verdict, ignored: tuple[str]) -> None:
    expected = JSONResponse(
        IngestResult(
            accepted=verdict.accepted, duplicates=verdict.duplicates, stale=verdict.stale, ignored=list(ignored)
        ).model_dump(),
        status_code=202 if verdict.accepted else 200,
    )
    answer = result_response(verdict, ignored)
    assert answer.body == expected.body
    assert answer.status_code == expected.status_code
    assert answer.headers["content-type"] == expected.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == expected.headers["content-length"]


BODIES = [
    b'{"id": "a", "value": 1.10, "n": 3, "deep": [1, {"x": null}]}',
    '{"term": "Fièvre ✓"}'.encode(),
    '{"term": "Fièvre"}'.encode("utf-16"),  # json.loads detects UTF-16/32 by their BOMs and zero bytes
    '{"term": "x"}'.encode("utf-32-le"),
    b"\xef\xbb\xbf{}",  # a UTF-8 BOM
    b'{"a": 1,}',
    b'{"a": "\xff"}',  # not UTF-8
    b"[" * 100_000 + b"]" * 100_000,
    b'{"n": ' + b"9" * 5000 + b"}",  # past Python's integer digit limit
    b'{"x": NaN, "y": 1e999999}',
    b"",
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_exact_json_is_read_as_json_loads_reads_it(body: bytes) -> None:
    """The shared decoder gives what `json.loads(body, parse_float=Decimal)` gave: the value, or the 422."""
    try:
        expected: Any = json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        with pytest.raises(InvalidBody) as raised:
            load_json(body, parse_float=Decimal)
        assert raised.value.errors == [{"loc": (), "msg": f"not valid JSON: {message}"[:300]}]
        return
    assert repr(load_json(body, parse_float=Decimal)) == repr(expected)  # Decimal('1.10') keeps its digits


def reference_number_problem(value: Decimal) -> str | None:
    """The bound as first written, with abs(): what the faster test must agree with."""
    if not value.is_finite():
        return "must be a finite number"
    if abs(value) >= MAX_MAGNITUDE:
        return f"out of range: the magnitude must be below {MAX_MAGNITUDE:.0E}"
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if -exponent > MAX_DECIMAL_PLACES:
        return f"too precise: at most {MAX_DECIMAL_PLACES} decimal places"
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        return f"too precise: at most {MAX_SIGNIFICANT_DIGITS} significant digits"
    return None


NUMBERS = [
    "0",
    "-0",
    "0E+20",
    "0E-999999",
    "0.000",
    "1E+15",
    "-1E+15",
    "1000000000000000",
    "999999999999999.9",
    "-999999999999999.99999",
    "1E+14",
    "9.99E+14",
    "10.0E+14",
    "1e999999",
    "1e-40",
    "1.8",
    "7.5",
    "123456789012345678901",
    "0.1234567890123456789",
    "NaN",
    "-Infinity",
]


@pytest.mark.parametrize("text", NUMBERS)
def test_the_magnitude_bound_is_the_one_written_with_abs(text: str) -> None:
    assert number_problem(Decimal(text)) == reference_number_problem(Decimal(text))


def canonical(n: int, type_: str, **data: Any) -> dict[str, Any]:
    payloads: dict[str, dict[str, Any]] = {
        "ae": {"ae_id": f"AE-{n}", "version": 1, "term": "Fever", "grade": 2},
        "lab": {"result_id": f"R-{n}", "test": "NEUT", "value": 0.40, "lln": 1.8, "collected_at": "2026-03-01T06:00Z"},
        "enrollment": {"arm": "A", "enrolled_at": "2026-02-10"},
        "dose": {"dose_id": f"D-{n}", "number": 1, "administered_at": "2026-02-12T10:00:00+01:00"},
    }
    return {
        "id": f"msg-{n}",
        "type": type_,
        "study": "NCT07212335",
        "site": "SITE-1",
        "subject": f"S-{n % 3:03d}",
        "data": {**payloads[type_], **data},
    }


MIXED = [canonical(n, ("ae", "lab", "enrollment", "dose")[n % 4]) for n in range(12)]
BATCHES: dict[str, list[Any]] = {
    "valid, every type interleaved": MIXED,
    "valid, one event": MIXED[:1],
    "a header field missing": [*MIXED[:3], {k: v for k, v in MIXED[3].items() if k != "site"}, *MIXED[4:]],
    "an unknown type": [*MIXED[:2], {**MIXED[2], "type": "vitalz"}],
    "a payload field of the wrong type": [*MIXED[:5], canonical(5, "ae", grade="severe"), *MIXED[6:]],
    "errors in several events and kinds": [
        canonical(0, "lab", collected_at="yesterday"),
        {**canonical(1, "ae"), "subject": None},
        canonical(2, "dose", number=-1),
        MIXED[3],
    ],
    "a number out of bounds": [*MIXED[:4], canonical(4, "lab", uln=Decimal("1e999999"))],
    "an AE version too large": [canonical(0, "ae", version=2**31), *MIXED[1:]],
    "an item that is not an object": [*MIXED[:2], ["not", "an", "event"], 7],
    "a repeated id": [*MIXED[:4], MIXED[1]],
    "data that is not an object": [{**MIXED[0], "data": "text"}],
}


def parsed_each_alone(items: list[Any]) -> list[CanonicalEvent] | list[dict[str, Any]]:
    """What parsing every item on its own gives (the events, or the errors): the reference."""
    try:
        events = _parse_each([(("events", i), item) for i, item in enumerate(items)])
        _refuse_repeated_ids(events, [(("events", i), item) for i, item in enumerate(items)])
    except InvalidBody as exc:
        return exc.errors
    return events


@pytest.mark.parametrize("items", BATCHES.values(), ids=BATCHES.keys())
def test_a_batch_validated_at_once_is_what_each_event_alone_gave(items: list[Any]) -> None:
    """Same events (header and payload models, field for field), or the same errors at the same pointers."""
    raw = json.dumps({"events": items}, default=str).encode()
    expected = parsed_each_alone(json.loads(raw, parse_float=Decimal)["events"])
    try:
        got: list[CanonicalEvent] | list[dict[str, Any]] = parse_body(raw)
    except InvalidBody as exc:
        got = exc.errors
    assert got == expected
    if expected and isinstance(expected[0], CanonicalEvent):
        assert [type(e.data) for e in got] == [type(e.data) for e in expected]  # type: ignore[union-attr]
        assert _parse_valid_batch(json.loads(raw, parse_float=Decimal)["events"]) is not None, "the fast path ran"
