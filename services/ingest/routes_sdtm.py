"""SDTM AE, LB, EX and DM rows for backfills: thousands of rows per request, published in batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.ingest import openapi_docs as docs
from services.ingest.adapters.sdtm import parse_sdtm
from services.ingest.intake import parsed, receive, webhook_delivery
from services.ingest.normalise import InvalidBody
from services.ingest.routes import SourceId, publish
from services.ingest.sources import SourceKind
from shared.problems import validation_problem

router = APIRouter()
ROWS_SCHEMA = {
    "type": "object",
    "properties": {"domain": {"type": "string", "enum": ["AE", "LB", "EX", "DM"]}, "rows": {"type": "array"}},
}


@router.post(
    "/v1/sources/{source_id}/sdtm",
    status_code=202,
    summary="Post SDTM rows (AE, LB, EX, DM) as JSON or CSV",
    description=(
        "Rows are published in batches (concurrent sends, then every acknowledgement awaited); the answer is 202 "
        "only after the broker acknowledged every new row. Rows carry no ids, so a row is a duplicate when it "
        "equals what was last published for its record: re-posting an extract reports duplicates, a row changed "
        "(or changed back) is published as a new version. The source may have a larger body limit. " + docs.AUTH_TEXT
    ),
    responses=docs.responses(docs.accepted_example("NCT07212335:101-004:lab:LBSEQ-3@9a0e#1")),
    openapi_extra=docs.request_body(
        {
            "application/json": {"schema": ROWS_SCHEMA, "examples": {"lb": {"value": docs.SDTM_JSON_EXAMPLE}}},
            "text/csv": {"schema": {"type": "string"}, "examples": {"ae": {"value": docs.SDTM_CSV_EXAMPLE}}},
        }
    ),
)
async def post_sdtm(
    source_id: SourceId,
    request: Request,
    domain: Annotated[str | None, Query(pattern="^(AE|LB|EX|DM|ae|lb|ex|dm)$")] = None,
) -> Response:
    runtime, source, body, received_at = await receive(request, source_id, SourceKind.SDTM)
    content_type = request.headers.get("content-type", "application/json").lower()
    try:
        outcome = await parsed(
            body, lambda: parse_sdtm(body, content_type=content_type, source=source.config, domain=domain)
        )
    except InvalidBody as exc:
        runtime.metrics.rejected.labels(reason="invalid").inc()
        raise validation_problem(exc.errors) from exc
    webhook = webhook_delivery(source, request.headers, body)
    return await publish(
        runtime, source_id, outcome.records, received_at, outcome.ignored, webhook=webhook, backfill=True
    )
