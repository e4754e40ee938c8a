"""Subject status events (withdrawn, lost to follow-up, died, completed) from every format: a status, never a
deletion, so a withdrawn subject's DLTs keep counting in the 3+3."""

from __future__ import annotations

import json
from datetime import date

import pytest

from services.ingest.adapters.fhir import parse_fhir
from services.ingest.adapters.odm import parse_odm
from services.ingest.adapters.sdtm import parse_sdtm
from services.ingest.normalise import InvalidBody, parse_body
from services.ingest.sources import AuthConfig, AuthScheme, SourceConfig
from shared.events import InboundType, SubjectStatusData
from tests.unit.ingest.conftest import TRIAL, load_fixture_sources

SDTM = SourceConfig(kind="sdtm", trial=TRIAL, auth=AuthConfig(scheme=AuthScheme.BEARER, secret="t" * 32))
FHIR = SourceConfig(kind="fhir", trial=TRIAL, auth=AuthConfig(secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))


def statuses(records: list[object]) -> list[tuple[str, str, date | None, str | None]]:
    out = []
    for record in records:
        event = record.event  # type: ignore[attr-defined]
        assert event.header.type is InboundType.SUBJECT_STATUS
        data = event.data
        assert isinstance(data, SubjectStatusData)
        out.append((event.header.subject, data.status, data.effective_on, data.reason))
    return out


def test_sdtm_ds_dispositions_become_statuses_and_milestones_are_ignored() -> None:
    rows = [
        {
            "DOMAIN": "DS",
            "USUBJID": "101-001",
            "DSCAT": "DISPOSITION EVENT",
            "DSDECOD": "WITHDRAWAL BY SUBJECT",
            "DSTERM": "moved abroad",
            "DSSTDTC": "2026-03-20",
        },
        {
            "DOMAIN": "DS",
            "USUBJID": "101-002",
            "DSCAT": "DISPOSITION EVENT",
            "DSDECOD": "DEATH",
            "DSSTDTC": "2026-03-21",
        },
        {"DOMAIN": "DS", "USUBJID": "101-003", "DSDECOD": "LOST TO FOLLOW-UP"},
        {"DOMAIN": "DS", "USUBJID": "101-004", "DSDECOD": "COMPLETED", "DSSTDTC": "2026-08-01"},
        {"DOMAIN": "DS", "USUBJID": "101-005", "DSCAT": "PROTOCOL MILESTONE", "DSDECOD": "INFORMED CONSENT OBTAINED"},
    ]
    outcome = parse_sdtm(json.dumps(rows).encode(), content_type="application/json", source=SDTM)
    assert statuses(outcome.records) == [
        ("101-001", "withdrawn", date(2026, 3, 20), "moved abroad"),
        ("101-002", "died", date(2026, 3, 21), "DEATH"),
        ("101-003", "lost_to_follow_up", None, "LOST TO FOLLOW-UP"),
        ("101-004", "completed", date(2026, 8, 1), None),
    ]
    assert len(outcome.ignored) == 1 and "milestone" in outcome.ignored[0]


def test_sdtm_unknown_disposition_names_its_column() -> None:
    rows = [{"DOMAIN": "DS", "USUBJID": "101-001", "DSDECOD": "ABDUCTED BY ALIENS"}]
    with pytest.raises(InvalidBody) as caught:
        parse_sdtm(json.dumps(rows).encode(), content_type="application/json", source=SDTM)
    assert caught.value.errors[0]["loc"] == ("rows", 0, "DSDECOD")


def research_subject(status: str, **extra: object) -> bytes:
    resource = {
        "resourceType": "ResearchSubject",
        "id": "rs-1",
        "meta": {"versionId": "3"},
        "status": status,
        "individual": {"reference": "Patient/101-007"},
        "study": {"reference": f"ResearchStudy/{TRIAL}"},
        **extra,
    }
    return json.dumps(resource).encode()


def test_fhir_research_subject_status() -> None:
    withdrawn = parse_fhir(research_subject("withdrawn", period={"end": "2026-04-02"}), source=FHIR)
    assert statuses(withdrawn.records) == [("101-007", "withdrawn", date(2026, 4, 2), "withdrawn")]
    assert withdrawn.records[0].delivery_id == "ResearchSubject/rs-1/_history/3"
    off = parse_fhir(research_subject("off-study"), source=FHIR)
    assert statuses(off.records)[0][1] == "completed"
    deceased = research_subject(
        "off-study", progress=[{"subjectState": {"coding": [{"code": "deceased"}], "text": "died of sepsis"}}]
    )
    assert statuses(parse_fhir(deceased, source=FHIR).records)[0][1:] == ("died", None, "died of sepsis")
    screening = parse_fhir(research_subject("screening"), source=FHIR)
    assert screening.records == [] and "before enrolment" in screening.ignored[0]


def test_odm_disposition_form() -> None:
    sources = load_fixture_sources("odm/sources.yaml")
    body = b"""<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><ClinicalData StudyOID="NCT07212335">
      <SubjectData SubjectKey="101-009"><SiteRef LocationOID="101"/><StudyEventData StudyEventOID="EOS">
      <FormData FormOID="DS"><ItemGroupData ItemGroupOID="DS"><ItemData ItemOID="DS.DSDECOD" Value="Lost to follow-up"/>
      <ItemData ItemOID="DS.DSSTDAT" Value="2026-04-03"/></ItemGroupData>
      </FormData></StudyEventData></SubjectData></ClinicalData></ODM>"""
    outcome = parse_odm(body, source=sources["rave"].config)
    [(subject, status, effective, _)] = statuses(outcome.records)
    assert (subject, status, effective) == ("101-009", "lost_to_follow_up", date(2026, 4, 3))


def test_canonical_json_subject_status() -> None:
    body = {
        "id": "msg-1",
        "type": "subject_status",
        "study": TRIAL,
        "site": "101",
        "subject": "101-001",
        "data": {"status": "withdrawn", "effective_on": "2026-03-20", "reason": "consent withdrawn"},
    }
    [event] = parse_body(json.dumps(body).encode())
    assert isinstance(event.data, SubjectStatusData) and event.data.status == "withdrawn"
