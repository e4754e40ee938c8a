"""HL7 FHIR R4: AdverseEvent and laboratory Observation, single resources or Bundles."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest import openapi_docs as docs
from services.ingest.adapters.fhir import parse_fhir
from services.ingest.intake import parsed, receive, webhook_delivery
from services.ingest.normalise import InvalidBody
from services.ingest.routes import SourceId, publish
from services.ingest.sources import SourceKind
from shared.problems import validation_problem

router = APIRouter()
FHIR_SCHEMA = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}


@router.post(
    "/v1/sources/{source_id}/fhir",
    status_code=202,
    summary="Post FHIR R4 AdverseEvent / laboratory Observation resources or a Bundle of them",
    description=(
        "AdverseEvent with the HL7 AE Clinical Research backport extensions (ae-grade, seriousness-criteria, "
        "suspect-entity causality, resolve-date, status entered-in-error); Observation with LOINC, UCUM, "
        "comparators and referenceRange. Entries of other types are listed in `ignored`. " + docs.AUTH_TEXT
    ),
    responses=docs.responses(
        {"accepted": ["AdverseEvent/ae-101-004-12/_history/2"], "duplicates": [], "stale": [], "ignored": []}
    ),
    openapi_extra=docs.request_body(
        {
            media: {
                "schema": FHIR_SCHEMA,
                "examples": {
                    "adverse_event": {"summary": "Serious AE, grade 3", "value": docs.FHIR_AE_EXAMPLE},
                    "lab_bundle": {"summary": "Bundle with a censored ANC", "value": docs.FHIR_LAB_EXAMPLE},
                },
            }
            for media in ("application/fhir+json", "application/json")
        }
    ),
)
async def post_fhir(source_id: SourceId, request: Request) -> Response:
    runtime, source, body, received_at = await receive(request, source_id, SourceKind.FHIR)
    try:
        outcome = await parsed(body, lambda: parse_fhir(body, source=source.config))
    except InvalidBody as exc:
        runtime.metrics.rejected.labels(reason="invalid").inc()
        raise validation_problem(exc.errors) from exc
    webhook = webhook_delivery(source, request.headers, body)
    return await publish(runtime, source_id, outcome.records, received_at, outcome.ignored, webhook=webhook)
