"""The hot path's shortcuts answer exactly what the general machinery they replace answered."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from services.ingest.bounds import MAX_DECIMAL_PLACES, MAX_MAGNITUDE, MAX_SIGNIFICANT_DIGITS, number_problem
from services.ingest.intake import IngestResult, Verdict
from services.ingest.normalise import InvalidBody, load_json
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
