"""The hot path's shortcuts answer exactly what the general machinery they replace answered."""

from __future__ import annotations

import pytest
from fastapi.responses import JSONResponse

from services.ingest.intake import IngestResult, Verdict
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
