"""CDISC ODM 1.3 ClinicalData snapshots (form level), mapped through the source's ItemOID map."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest import openapi_docs as docs
from services.ingest.adapters.odm import parse_odm
from services.ingest.intake import parsed, receive, webhook_delivery
from services.ingest.normalise import InvalidBody
from services.ingest.routes import SourceId, publish
from services.ingest.sources import SourceKind
from shared.problems import validation_problem

router = APIRouter()


@router.post(
    "/v1/sources/{source_id}/odm",
    status_code=202,
    summary="Post a CDISC ODM 1.3 ClinicalData snapshot",
    description=(
        "Form-level snapshots (Rave RWS datasets, OpenClinica clinical data); Rave and OpenClinica extension "
        "attributes are tolerated, as is a UTF-8 BOM. Parsed with defusedxml: DTDs and entities are refused. "
        "Forms not in the source's map are listed in `ignored`. " + docs.AUTH_TEXT
    ),
    responses=docs.responses(docs.accepted_example("NCT07212335:101-004:ae:SE_AE[1]/AE[1]/AE_LOG_LINE[1]@4f1c#1")),
    openapi_extra=docs.request_body(
        {
            media: {"schema": {"type": "string"}, "examples": {"ae_snapshot": {"value": docs.ODM_EXAMPLE}}}
            for media in ("application/xml", "text/xml")
        }
    ),
)
async def post_odm(source_id: SourceId, request: Request) -> Response:
    runtime, source, body, received_at = await receive(request, source_id, SourceKind.ODM)
    try:
        outcome = await parsed(body, lambda: parse_odm(body, source=source.config))
    except InvalidBody as exc:
        runtime.metrics.rejected.labels(reason="invalid").inc()
        raise validation_problem(exc.errors) from exc
    webhook = webhook_delivery(source, request.headers, body)
    return await publish(runtime, source_id, outcome.records, received_at, outcome.ignored, webhook=webhook)
