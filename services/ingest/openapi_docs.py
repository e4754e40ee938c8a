"""OpenAPI for the inbound endpoints: bodies are read raw (signatures cover the bytes), so we describe them here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.ingest.intake import IngestResult


class Problem(BaseModel):
    """RFC 9457 problem details; `errors` lists each invalid field as a JSON pointer (422)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, str]] | None = None


def _problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> dict[str, Any]:
    example = {"type": f"https://sentinel.invalid/problems/{slug}", "title": title, "status": status, "detail": detail}
    example.update(extra)
    return {"application/problem+json": {"schema": Problem.model_json_schema(), "example": example}}


AUTH_HEADERS = [
    {"name": "webhook-id", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "webhook-timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "webhook-signature", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "X-Hub-Signature-256", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "Authorization", "in": "header", "required": False, "schema": {"type": "string"}},
]
AUTH_TEXT = (
    "Authenticated per source (sources file): Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, "
    "`webhook-signature`), GitHub-style `X-Hub-Signature-256`, or `Authorization: Bearer` for senders that "
    "cannot sign. The signature covers the raw bytes and is checked before parsing."
)


def accepted_example(delivery_id: str) -> dict[str, list[str]]:
    return {"accepted": [delivery_id], "duplicates": [], "stale": [], "ignored": []}


def responses(accepted_example: dict[str, Any], *, stored_only: bool = False) -> dict[int | str, dict[str, Any]]:
    accepted = (
        "Stored durably; the record is pulled and published in the background"
        if stored_only
        else ("Accepted: the broker acknowledged every new event")
    )
    return {
        200: {
            "description": "Nothing new: every record was a duplicate or an older version (listed in `stale`)",
            "content": {
                "application/json": {
                    "schema": IngestResult.model_json_schema(),
                    "example": {"accepted": [], "duplicates": ["msg-1"], "stale": [], "ignored": []},
                }
            },
        },
        202: {
            "description": accepted,
            "content": {"application/json": {"schema": IngestResult.model_json_schema(), "example": accepted_example}},
        },
        401: {
            "description": "Missing or wrong signature or token",
            "content": _problem(401, "Invalid signature", "no webhook-signature matches the body", "invalid-signature"),
        },
        404: {
            "description": "Unknown source, or a source of another kind",
            "content": _problem(404, "Unknown source", "no source 'x' is configured", "unknown-source"),
        },
        413: {
            "description": "Body larger than the source's limit",
            "content": _problem(413, "Payload too large", "the body is larger than 1000000 bytes", "too-large"),
        },
        422: {
            "description": "Invalid body; `errors` names each field",
            "content": _problem(
                422,
                "Invalid event",
                "1 field(s) are invalid, first at /entry/0/resource/subject: the resource needs subject.reference",
                "invalid-field",
                errors=[{"pointer": "/entry/0/resource/subject", "detail": "the resource needs subject.reference"}],
            ),
        },
        429: {
            "description": (
                "Over the source's rate limit (charged only for authenticated requests), or too many failed "
                "authentications for this source; retry after Retry-After seconds"
            ),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": _problem(429, "Too many requests", "retry after 2 s", "rate-limited"),
        },
        503: {
            "description": "The broker is unavailable; retry after Retry-After seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": _problem(503, "Broker unavailable", "nothing was accepted, retry later", "broker-unavailable"),
        },
    }


def request_body(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"parameters": AUTH_HEADERS, "requestBody": {"required": True, "content": content}}


CANONICAL_EXAMPLE = {
    "id": "msg-2026-03-01-0001",
    "type": "ae",
    "study": "NCT07212335",
    "site": "101",
    "subject": "101-004",
    "data": {
        "ae_id": "AE-12",
        "version": 1,
        "term": "Cytokine release syndrome",
        "grade": 3,
        "serious": True,
        "seriousness": {"hospitalization": True},
        "relatedness": "probable",
        "onset": "2026-02-27",
        "awareness_at": "2026-02-28T09:15:00+01:00",
    },
}

FHIR_AE_EXAMPLE = {
    "resourceType": "AdverseEvent",
    "id": "ae-101-004-12",
    "meta": {"versionId": "2"},
    "extension": [
        {
            "url": "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade",
            "valueCodeableConcept": {
                "coding": [{"system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "code": "C41340"}]
            },
        },
        {
            "url": "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/seriousness-criteria",
            "extension": [
                {"url": "criterionCode", "valueCodeableConcept": {"coding": [{"code": "C83052"}]}},
                {"url": "criterionPresent", "valueBoolean": True},
            ],
        },
    ],
    "actuality": "actual",
    "event": {"text": "Cytokine release syndrome"},
    "subject": {"reference": "Patient/101-004"},
    "date": "2026-02-27",
    "detected": "2026-02-28T09:15:00+01:00",
    "seriousness": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness", "code": "serious"}]
    },
}
FHIR_LAB_EXAMPLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {
            "resource": {
                "resourceType": "Observation",
                "id": "lab-101-004-anc-3",
                "status": "final",
                "category": [{"coding": [{"code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
                "subject": {"reference": "Patient/101-004"},
                "effectiveDateTime": "2026-03-01T07:30:00+01:00",
                "valueQuantity": {
                    "value": 0.4,
                    "comparator": "<",
                    "unit": "10*9/L",
                    "system": "http://unitsofmeasure.org",
                    "code": "10*9/L",
                },
                "referenceRange": [{"low": {"value": 1.5}, "high": {"value": 8.0}}],
            }
        }
    ],
}
ODM_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3" FileType="Snapshot" FileOID="f1"
     CreationDateTime="2026-03-01T10:00:00+00:00">
  <ClinicalData StudyOID="NCT07212335" MetaDataVersionOID="1">
    <SubjectData SubjectKey="101-004">
      <SiteRef LocationOID="101"/>
      <StudyEventData StudyEventOID="SE_AE" StudyEventRepeatKey="1">
        <FormData FormOID="AE" FormRepeatKey="1">
          <ItemGroupData ItemGroupOID="AE_LOG_LINE" ItemGroupRepeatKey="1">
            <ItemData ItemOID="AE.AETERM" Value="Cytokine release syndrome"/>
            <ItemData ItemOID="AE.AESTDTC" Value="27 FEB 2026"/>
            <ItemData ItemOID="AE.AESER" Value="Y"/>
            <ItemData ItemOID="AE.AESHOSP" Value="1"/>
          </ItemGroupData>
        </FormData>
      </StudyEventData>
    </SubjectData>
  </ClinicalData>
</ODM>
"""
SDTM_JSON_EXAMPLE = {
    "domain": "LB",
    "rows": [
        {
            "STUDYID": "NCT07212335",
            "USUBJID": "101-004",
            "LBSEQ": 3,
            "LBTESTCD": "HGB",
            "LBORRES": "5.4",
            "LBORRESU": "mmol/L",
            "LBORNRLO": "7.4",
            "LBORNRHI": "9.9",
            "LBDTC": "2026-03-01T07:30",
        }
    ],
}
SDTM_CSV_EXAMPLE = (
    "STUDYID,DOMAIN,USUBJID,AESEQ,AETERM,AETOXGR,AESER,AESDTH,AEOUT,AESTDTC\n"
    "NCT07212335,AE,101-004,1,Cytokine release syndrome,3,Y,N,RECOVERING/RESOLVING,2026-02\n"
)
REDCAP_DET_EXAMPLE = (
    "redcap_url=https%3A%2F%2Fredcap.example.org%2F&project_url=https://redcap.example.org/redcap_v14.0.0/index.php?pid=42"
    "&project_id=42&username=site101&record=101-004&redcap_event_name=treatment_arm_1"
    "&instrument=adverse_events&redcap_repeat_instance=2&adverse_events_complete=2"
)
