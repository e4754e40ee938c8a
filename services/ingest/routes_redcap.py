"""REDCap's Data Entry Trigger: stored durably first (REDCap never retries), then pulled and published."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest import openapi_docs as docs
from services.ingest.adapters.redcap import parse_det
from services.ingest.intake import IngestResult, receive
from services.ingest.normalise import InvalidBody
from services.ingest.redcap_sync import RedcapSync
from services.ingest.routes import SourceId
from services.ingest.sources import SourceKind
from shared.problems import validation_problem

router = APIRouter()
TOKEN_PARAMETER = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "The source's bearer token, for REDCap (a DET URL cannot carry headers)",
}


@router.post(
    "/v1/sources/{source_id}/redcap-det",
    status_code=202,
    summary="REDCap Data Entry Trigger (form-encoded)",
    description=(
        "The notice (project_id, record, instrument, event, repeat instance) is stored before the answer; the "
        "record is then pulled through the REDCap API with the project's token and published. Only the "
        "configured project_id is accepted. Authenticated with the source's bearer token (`Authorization` or "
        "`?token=`)."
    ),
    responses=docs.responses(docs.accepted_example("redcap-trigger:17"), stored_only=True),
    openapi_extra={
        "parameters": [*docs.AUTH_HEADERS, TOKEN_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["project_id", "record", "instrument"],
                        "properties": {
                            "project_id": {"type": "string"},
                            "record": {"type": "string"},
                            "instrument": {"type": "string"},
                            "redcap_event_name": {"type": "string"},
                            "redcap_repeat_instance": {"type": "string"},
                            "redcap_url": {"type": "string"},
                        },
                    },
                    "examples": {"trigger": {"value": docs.REDCAP_DET_EXAMPLE}},
                }
            },
        },
    },
)
async def post_redcap_det(source_id: SourceId, request: Request) -> JSONResponse:
    runtime, source, body, received_at = await receive(request, source_id, SourceKind.REDCAP)
    assert source.config.redcap is not None
    try:
        notice = parse_det(body, project_id=source.config.redcap.project_id)
    except InvalidBody as exc:
        runtime.metrics.rejected.labels(reason="invalid").inc()
        raise validation_problem(exc.errors) from exc
    sync: RedcapSync = request.app.state.redcap_sync
    trigger_id = await sync.store_trigger(source, notice, received_at)
    return JSONResponse(IngestResult(accepted=[f"redcap-trigger:{trigger_id}"]).model_dump(), status_code=202)
