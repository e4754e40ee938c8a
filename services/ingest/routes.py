"""Canonical JSON: authenticate, validate, publish durably, then (and only then) acknowledge."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from services.ingest import openapi_docs as docs
from services.ingest.adapters.records import SourceRecord, version_text
from services.ingest.bounds import out_of_bounds
from services.ingest.intake import (
    RecordingFailed,
    Verdict,
    WebhookDelivery,
    WebhookIdReused,
    accept_records,
    broker_problem,
    database_problem_for,
    parsed,
    receive,
    webhook_conflict,
    webhook_delivery,
)
from services.ingest.normalise import CanonicalEvent, InvalidBody, parse_body
from services.ingest.runtime import IngestRuntime
from services.ingest.sources import Source, SourceKind
from shared.events import (
    AeData,
    AeReviewData,
    DoseData,
    EnrollmentData,
    LabData,
    RecordStatusData,
    SampleData,
    SubjectStatusData,
    TransfusionData,
    VitalsData,
)
from shared.kafka import BrokerUnavailable
from shared.memory import LARGE_REQUEST_RECORDS, release_after
from shared.problems import validation_problem

router = APIRouter()

SOURCE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
SourceId = Annotated[str, Path(pattern=SOURCE_ID_PATTERN, description="Source id from the sources file")]
EVENTS_PATH = "/v1/sources/{source_id}/events"


@router.post(
    EVENTS_PATH,
    status_code=202,
    summary="Post canonical clinical events (one, or {'events': [...]})",
    description="Canonical Safety-Sentinel JSON (DESIGN.md, Contracts). " + docs.AUTH_TEXT,
    responses=docs.responses({"accepted": ["msg-2026-03-01-0001"], "duplicates": [], "stale": [], "ignored": []}),
    openapi_extra=docs.request_body(
        {
            "application/json": {
                "schema": {"type": "object"},
                "examples": {
                    "one": {"summary": "One AE", "value": docs.CANONICAL_EXAMPLE},
                    "batch": {"summary": "A batch", "value": {"events": [docs.CANONICAL_EXAMPLE]}},
                },
            }
        }
    ),
)
async def post_events(source_id: SourceId, request: Request) -> Response:
    runtime, source, body, received_at = await receive(request, source_id, SourceKind.CANONICAL)
    try:
        events = await parsed(body, lambda: parse_body(body))  # numbers bounded here, pointers into the body
        _check_trial(source, events)
    except InvalidBody as exc:
        runtime.metrics.rejected.labels(reason="invalid").inc()
        raise validation_problem(exc.errors) from exc
    records = [canonical_record(e) for e in events]
    webhook = webhook_delivery(source, request.headers, body)
    return await publish(runtime, source_id, records, received_at, webhook=webhook, bounded=True)


async def publish(
    runtime: IngestRuntime,
    source_id: str,
    records: list[SourceRecord],
    received_at: datetime,
    ignored: Sequence[str] = (),
    *,
    webhook: WebhookDelivery | None = None,
    bounded: bool = False,
    backfill: bool = False,
) -> Response:
    """Refuse numbers safety could not process (adapters' records are named by their delivery id), then accept."""
    if not bounded:
        errors = [
            {"loc": (record.delivery_id, *error["loc"]), "msg": error["msg"]}
            for record in records
            for error in out_of_bounds(record.event.data)
        ]
        if errors:
            runtime.metrics.rejected.labels(reason="invalid").inc()
            raise validation_problem(errors)
    try:
        verdict = await accept_records(runtime, source_id, records, received_at, webhook=webhook, backfill=backfill)
    except BrokerUnavailable as exc:
        raise broker_problem(runtime, exc) from exc
    except RecordingFailed as exc:
        raise database_problem_for(runtime, exc) from exc
    except WebhookIdReused as exc:
        raise webhook_conflict(runtime, exc) from exc
    response = result_response(verdict, ignored)
    if len(records) >= LARGE_REQUEST_RECORDS:  # after the answer is sent, once this request's objects are freed
        response.background = BackgroundTask(release_after, len(records))
    return response


RESULT_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""The encoder `JSONResponse` would build anew for every answer (its options are not `json.dumps`'s defaults)."""


def result_response(verdict: Verdict, ignored: Sequence[str]) -> Response:
    """`IngestResult` as JSON, byte for byte what `JSONResponse(IngestResult(...).model_dump())` sent: every field
    is a list of the senders' ids, already strings, so the model's validation and dump only cost (9% of a post)."""
    result = {"accepted": verdict.accepted, "duplicates": verdict.duplicates, "stale": verdict.stale}
    result["ignored"] = list(ignored)
    return Response(
        RESULT_JSON.encode(result).encode(),
        status_code=202 if verdict.accepted else 200,
        media_type="application/json",
    )


def _check_trial(source: Source, events: list[CanonicalEvent]) -> None:
    trial = source.config.trial
    if trial is None:
        return
    errors = [
        {"loc": ("events", i, "study") if len(events) > 1 else ("study",), "msg": f"this source posts for {trial} only"}
        for i, event in enumerate(events)
        if event.header.study != trial
    ]
    if errors:
        raise InvalidBody("wrong trial", errors)


def canonical_record(event: CanonicalEvent) -> SourceRecord:
    """Record keys for canonical events: an AE is ordered by its `version`; other records carry none."""
    header, data = event.header, event.data
    base = f"{header.study}:{header.subject}"
    if isinstance(data, AeData):
        return SourceRecord(event, f"{base}:ae:{data.ae_id}", version_text(data.version))
    if isinstance(data, LabData):
        return SourceRecord(event, f"{base}:lab:{data.result_id}")
    if isinstance(data, DoseData):
        return SourceRecord(event, f"{base}:dose:{data.dose_id}")
    if isinstance(data, EnrollmentData):
        return SourceRecord(event, f"{base}:enrollment:{header.subject}")
    if isinstance(data, VitalsData):
        return SourceRecord(event, f"{base}:vitals:{data.vitals_id}")
    if isinstance(data, AeReviewData):
        return SourceRecord(event, f"{base}:ae_review:{data.review_id}")
    if isinstance(data, SubjectStatusData):  # was an AssertionError (a 500) for canonical subject_status posts
        return SourceRecord(event, f"{base}:subject_status:{header.subject}")
    if isinstance(data, TransfusionData):
        return SourceRecord(event, f"{base}:transfusion:{data.transfusion_id}")
    if isinstance(data, SampleData):
        return SourceRecord(event, f"{base}:sample:{data.sample_id}")
    assert isinstance(data, RecordStatusData)
    return SourceRecord(event, f"{base}:{data.record_type}:{data.record_id}")
