"""The webhook endpoint: authenticate, validate, publish durably, then (and only then) acknowledge."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session

from services.ingest import store
from services.ingest.normalise import InvalidBody, parse_body, to_envelope
from services.ingest.runtime import IngestRuntime
from shared.events import ClinicalEnvelopeBase, message_key
from shared.kafka import BrokerUnavailable
from shared.problems import ProblemError, validation_problem
from shared.webhook_signatures import SignatureError, verify

router = APIRouter()

SourceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]


@router.post(
    "/v1/sources/{source_id}/events",
    status_code=202,
    summary="Post canonical clinical events (one, or {'events': [...]})",
    responses={
        200: {"description": "Every event was a duplicate of one already accepted"},
        202: {"description": "Accepted: the broker has every new event durably"},
        401: {"description": "Missing, wrong or stale Standard Webhooks signature"},
        413: {"description": "Body larger than the limit"},
        422: {"description": "Invalid event; `errors` lists each field as a JSON pointer"},
        503: {"description": "The broker is unavailable; retry after Retry-After seconds"},
    },
)
async def post_events(source_id: SourceId, request: Request) -> JSONResponse:
    runtime: IngestRuntime = request.app.state.runtime
    secret = runtime.secrets.get(source_id)
    if secret is None:
        raise ProblemError(
            404, "Unknown source", f"no webhook secret is configured for source '{source_id}'", slug="unknown-source"
        )
    body = await _read_bounded(request, runtime.settings.max_body_bytes)
    received_at = runtime.clock.now()
    try:
        verify(
            secret,
            msg_id=request.headers.get("webhook-id"),
            timestamp=request.headers.get("webhook-timestamp"),
            signature_header=request.headers.get("webhook-signature"),
            body=body,
            now=received_at,
            tolerance=runtime.signature_tolerance,
        )
    except SignatureError as exc:
        runtime.metrics.rejected.labels(reason="signature").inc()
        raise ProblemError(401, "Invalid signature", str(exc), slug="invalid-signature") from exc
    try:
        events = parse_body(body)
    except InvalidBody as exc:
        runtime.metrics.rejected.labels(reason="invalid").inc()
        raise validation_problem(exc.errors) from exc

    duplicates = await asyncio.to_thread(_duplicates, runtime, source_id, [e.header.id for e in events])
    fresh = [to_envelope(source_id, e, received_at) for e in events if e.header.id not in duplicates]
    try:
        for envelope in fresh:
            await runtime.publisher.publish(
                runtime.settings.clinical_topic,
                key=message_key(envelope.trialid, envelope.subject),
                value=envelope.model_dump_json().encode(),
            )
    except BrokerUnavailable as exc:
        runtime.metrics.rejected.labels(reason="broker_unavailable").inc()
        retry = str(runtime.settings.retry_after_seconds)
        raise ProblemError(
            503,
            "Broker unavailable",
            f"{exc}; nothing was accepted, retry later",
            slug="broker-unavailable",
            headers={"Retry-After": retry},
        ) from exc
    await asyncio.to_thread(_record, runtime, source_id, fresh, received_at)
    for envelope in fresh:
        runtime.metrics.published.labels(type=str(getattr(envelope, "type", "unknown"))).inc()
    duplicate_ids = [e.header.id for e in events if e.header.id in duplicates]
    runtime.metrics.duplicates.inc(len(duplicate_ids))
    return JSONResponse(
        {"accepted": [e.senderid for e in fresh], "duplicates": duplicate_ids},
        status_code=202 if fresh else 200,
    )


def _duplicates(runtime: IngestRuntime, source_id: str, event_ids: list[str]) -> set[str]:
    with Session(runtime.engine) as session:
        return store.already_accepted(session, source_id=source_id, event_ids=event_ids)


def _record(runtime: IngestRuntime, source_id: str, envelopes: list[ClinicalEnvelopeBase], now: datetime) -> None:
    with Session(runtime.engine) as session, session.begin():
        store.record_accepted(session, source_id=source_id, envelopes=envelopes, now=now)


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, "Payload too large", f"the body is larger than {limit} bytes", slug="too-large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, "Payload too large", f"the body is larger than {limit} bytes", slug="too-large")
        chunks.append(chunk)
    return b"".join(chunks)
