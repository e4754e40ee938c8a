"""Review findings on the ingest service: each test pins a defect the review found, so it cannot come back."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from services.ingest.adapters import normalise_values as nv
from services.ingest.adapters.fhir import parse_fhir
from services.ingest.adapters.odm import parse_odm
from services.ingest.sources import AuthConfig, FieldMap, SourceConfig, SourceMapping
from shared.clock import FakeClock
from shared.events import CLINICAL_ADAPTER, AeData, AeReported, LabData, Relatedness
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import FIXTURES, SECRET, TRIAL, AppFactory, webhook_id

TOKEN = "backfill-token-0123456789abcdef"
FHIR_SOURCE = SourceConfig(kind="fhir", trial=TRIAL, auth=AuthConfig(secret=SECRET))
NCI = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/"


def published(publisher: FakePublisher) -> list[Any]:
    return [CLINICAL_ADAPTER.validate_json(value) for _, _, value in publisher.messages]


def adverse_event(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "AdverseEvent",
        "id": "ae-1",
        "actuality": "actual",
        "subject": {"reference": "Patient/101-004"},
        "event": {"text": "Cytokine release syndrome"},
        "date": "2026-03-01",
        **extra,
    }


def only_ae(resource: dict[str, Any]) -> AeData:
    [record] = parse_fhir(json.dumps(resource).encode(), source=FHIR_SOURCE).records
    assert isinstance(record.event.data, AeData)
    return record.event.data


# --- versions and idempotency ---------------------------------------------------------------------


@pytest.fixture
def backfill(make_client: AppFactory) -> TestClient:
    return make_client(
        {"sources": {"backfill": {"kind": "sdtm", "trial": TRIAL, "auth": {"scheme": "bearer", "secret": TOKEN}}}}
    )


def _post_rows(client: TestClient, rows: list[dict[str, Any]]) -> Any:
    return client.post(
        "/v1/sources/backfill/sdtm",
        content=json.dumps({"rows": rows}),
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )


def test_correction_back_to_an_earlier_content_is_published(backfill: TestClient, publisher: FakePublisher) -> None:
    row = {"DOMAIN": "AE", "USUBJID": "101-001", "AESEQ": 1, "AETERM": "Neurotoxicity", "AETOXGR": "3"}
    assert _post_rows(backfill, [row]).status_code == 202
    assert _post_rows(backfill, [{**row, "AETOXGR": "2"}]).status_code == 202  # entry error: grade 3 -> 2
    corrected = _post_rows(backfill, [row])  # the site corrects it back to grade 3
    assert corrected.status_code == 202, corrected.json()
    latest = published(publisher)[-1]
    assert isinstance(latest, AeReported) and latest.data.grade == 3 and latest.data.version == 3
    assert len({e.id for e in published(publisher)}) == 3  # a new envelope id, or downstream dedupe drops it


# --- ODM ------------------------------------------------------------------------------------------

ODM_LOG_FORM = b"""<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" FileOID="f" CreationDateTime="2026-03-01T08:00:00Z">
 <ClinicalData StudyOID="S" MetaDataVersionOID="1">
  <SubjectData SubjectKey="101-004">
   <StudyEventData StudyEventOID="SE_LABS">
    <FormData FormOID="LB">
     <ItemGroupData ItemGroupOID="LB_LOG" ItemGroupRepeatKey="1">
      <ItemData ItemOID="LBTESTCD" Value="NEUT"/><ItemData ItemOID="LBORRES" Value="0.2"/>
      <ItemData ItemOID="LBORRESU" Value="10^9/L"/><ItemData ItemOID="LBDTC" Value="2026-03-01T08:00:00Z"/>
     </ItemGroupData>
     <ItemGroupData ItemGroupOID="LB_LOG" ItemGroupRepeatKey="2">
      <ItemData ItemOID="LBTESTCD" Value="PLAT"/><ItemData ItemOID="LBORRES" Value="180"/>
      <ItemData ItemOID="LBORRESU" Value="10^9/L"/><ItemData ItemOID="LBDTC" Value="2026-03-01T08:00:00Z"/>
     </ItemGroupData>
    </FormData>
   </StudyEventData>
  </SubjectData>
 </ClinicalData>
</ODM>"""


def test_odm_lab_log_form_publishes_every_line() -> None:
    source = SourceConfig(
        kind="odm",
        trial=TRIAL,
        auth=AuthConfig(secret=SECRET),
        mapping=SourceMapping(
            forms={
                "LB": FieldMap(
                    type="lab",
                    items={"LBTESTCD": "test", "LBORRES": "value", "LBORRESU": "unit", "LBDTC": "collected_at"},
                )
            }
        ),
    )
    outcome = parse_odm(ODM_LOG_FORM, source=source)
    labs = {r.event.data.test: r.event.data.value for r in outcome.records if isinstance(r.event.data, LabData)}
    assert labs == {"NEUT": "0.2", "PLAT": "180"}


# --- FHIR -----------------------------------------------------------------------------------------


def test_fhir_versioned_subject_reference_keeps_the_patient_id() -> None:
    [record] = parse_fhir(
        json.dumps(adverse_event(subject={"reference": "Patient/101-004/_history/3"})).encode(), source=FHIR_SOURCE
    ).records
    assert record.event.header.subject == "101-004"


def test_fhir_r4_causality_probably_likely_is_probable() -> None:
    causality = {
        "assessment": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess",
                    "code": "Probably-Likely",
                    "display": "Probably/Likely",
                }
            ]
        }
    }
    ae = only_ae(
        adverse_event(suspectEntity=[{"instance": {"reference": "Medication/cart"}, "causality": [causality]}])
    )
    assert ae.relatedness == Relatedness.PROBABLE


def test_fhir_seriousness_criterion_in_a_second_coding_is_read() -> None:
    criterion = {
        "url": BACKPORT + "seriousness-criteria",
        "extension": [
            {
                "url": "criterionCode",
                "valueCodeableConcept": {
                    "coding": [
                        {"system": "http://snomed.info/sct", "code": "419620001", "display": "Death"},
                        {"system": NCI, "code": "C48275", "display": "Death Related to Adverse Event"},
                    ]
                },
            },
            {"url": "criterionPresent", "valueBoolean": True},
        ],
    }
    ae = only_ae(adverse_event(extension=[criterion]))
    assert ae.seriousness is not None and ae.seriousness.death is True


def test_fhir_text_only_outcome_and_seriousness_are_not_dropped_silently() -> None:
    ae = only_ae(adverse_event(seriousness={"text": "Serious"}, outcome={"text": "Fatal"}))
    assert ae.outcome == "FATAL" or "UNMAPPED_VALUE:outcome" in ae.flags
    assert ae.serious is True or "UNMAPPED_VALUE:serious" in ae.flags


@pytest.mark.parametrize(("text", "expected"), [("CTCAE 5.0 Grade 3", 3), ("CTCAE 4.03 Grade 2", 2)])
def test_grade_text_with_a_ctcae_version_is_not_read_as_the_grade(text: str, expected: int) -> None:
    with contextlib.suppress(nv.UnreadableValue):  # refusing it (flagged) would also be safe
        assert nv.grade(text) == expected


# --- SDTM -----------------------------------------------------------------------------------------


def test_sdtm_json_lab_numbers_are_kept_exactly(backfill: TestClient, publisher: FakePublisher) -> None:
    body = (
        b'{"rows": [{"DOMAIN": "LB", "USUBJID": "101-001", "LBSEQ": 1, "LBTESTCD": "NEUT", '
        b'"LBORRES": 0.12345678901234567891, "LBORNRHI": 5.10, "LBORRESU": "10^9/L", '
        b'"LBDTC": "2026-03-01T08:00:00Z"}]}'
    )
    response = backfill.post(
        "/v1/sources/backfill/sdtm",
        content=body,
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert response.status_code == 202
    [lab] = published(publisher)
    assert lab.data.value == "0.12345678901234567891"
    assert lab.data.raw["LBORNRHI"] == "5.10" and lab.data.uln == Decimal("5.10")


# --- 500s for a client's bad input ----------------------------------------------------------------


@pytest.fixture
def signed(make_client: AppFactory) -> TestClient:
    client = make_client(
        {
            "sources": {
                "edc": {"kind": "canonical", "trial": TRIAL, "auth": {"secret": SECRET}},
                "fhir": {"kind": "fhir", "trial": TRIAL, "auth": {"secret": SECRET}},
                "backfill": {"kind": "sdtm", "trial": TRIAL, "auth": {"scheme": "bearer", "secret": TOKEN}},
            }
        }
    )
    return TestClient(client.app, raise_server_exceptions=False)


def _signed_post(client: TestClient, clock: FakeClock, url: str, raw: bytes, **headers: str) -> Any:
    sent = signature_headers(WebhookSecret.parse(SECRET), webhook_id(raw), int(clock.now().timestamp()), raw)
    return client.post(url, content=raw, headers={**sent, "content-type": "application/json", **headers})


HUGE_INT = b'{"id": ' + b"1" * 5000 + b"}"
DEEP = b"[" * 50_000 + b"]" * 50_000
EX_DATE = "2026-03-01T08:00:00Z"


@pytest.mark.parametrize("url", ["/v1/sources/edc/events", "/v1/sources/fhir/fhir"])
@pytest.mark.parametrize("raw", [HUGE_INT, DEEP], ids=["huge-int", "deep"])
def test_malformed_json_is_422_not_500(signed: TestClient, clock: FakeClock, url: str, raw: bytes) -> None:
    assert _signed_post(signed, clock, url, raw).status_code == 422


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'DOMAIN,USUBJID,AESEQ,AETERM\nAE,101-001,1,"' + b"x" * 200_000 + b'"\n', "text/csv"),
        (b'{"rows": [{"DOMAIN": "LB", "LBSEQ": ' + b"1" * 5000 + b"}]}", "application/json"),
        (
            json.dumps({"rows": [{"DOMAIN": "EX", "USUBJID": "1", "EXSEQ": "\u00b2", "EXSTDTC": EX_DATE}]}).encode(),
            "application/json",
        ),
    ],
    ids=["csv-field-limit", "json-huge-int", "superscript-digit"],
)
def test_bad_sdtm_body_is_422_not_500(signed: TestClient, raw: bytes, content_type: str) -> None:
    response = signed.post(
        "/v1/sources/backfill/sdtm",
        content=raw,
        headers={"authorization": f"Bearer {TOKEN}", "content-type": content_type},
    )
    assert response.status_code == 422


def test_huge_webhook_timestamp_is_401_not_500(signed: TestClient) -> None:
    response = signed.post(
        "/v1/sources/edc/events",
        content=b"{}",
        headers={"webhook-id": "x", "webhook-timestamp": "9" * 400, "webhook-signature": "v1,AAAA"},
    )
    assert response.status_code == 401


# --- rate limiting --------------------------------------------------------------------------------


def test_unsigned_requests_do_not_use_up_the_sources_rate_limit(
    make_client: AppFactory, clock: FakeClock, publisher: FakePublisher
) -> None:
    client = make_client(
        {
            "sources": {
                "edc": {
                    "kind": "canonical",
                    "trial": TRIAL,
                    "auth": {"secret": SECRET},
                    "rate_limit": {"requests_per_minute": 6, "burst": 2},
                }
            }
        }
    )
    for _ in range(2):
        assert client.post("/v1/sources/edc/events", content=b"{}").status_code == 401  # attacker, unsigned
    event = {
        "id": "msg-1",
        "type": "ae",
        "study": TRIAL,
        "site": "SITE-1",
        "subject": "101-004",
        "data": {"ae_id": "AE-1", "version": 1, "term": "Death", "grade": 5, "serious": True},
    }
    response = _signed_post(client, clock, "/v1/sources/edc/events", json.dumps(event).encode())
    assert response.status_code == 202, response.text


# --- REDCap ---------------------------------------------------------------------------------------


def test_one_bad_record_does_not_block_reconciliation_of_the_others(
    make_client: AppFactory, publisher: FakePublisher
) -> None:
    api_token = "0123456789ABCDEF0123456789ABCDEF"
    env = {"TEST_DET_TOKEN": "det-token-for-project-42-abcdef", "TEST_REDCAP_TOKEN": api_token}
    blank = {"aeterm": "", "aeser": "", "aesdth": "", "aeshosp": "", "aerel": "", "aestdat": "", "saeawaredat": ""}
    rows = [
        {
            "record_id": "101-008",
            "redcap_event_name": "treatment_arm_1",
            "redcap_repeat_instrument": "",
            "redcap_repeat_instance": "",
            "lbdat": "next tuesday",  # a typo on a lab form
            "anc": "1.1",
            **blank,
        },
        {
            "record_id": "101-009",
            "redcap_event_name": "treatment_arm_1",
            "redcap_repeat_instrument": "adverse_events",
            "redcap_repeat_instance": 1,
            "lbdat": "",
            "anc": "",
            **blank,
            "aeterm": "Cardiac arrest",
            "aetoxgr": "5",
            "aeser": "1",
            "aesdth": "1",
        },
    ]

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=rows)

    sources = yaml.safe_load((FIXTURES / "redcap/sources.yaml").read_text())
    client = make_client(sources, env=env, transport=httpx.MockTransport(handle))
    client.portal.call(client.app.state.redcap_sync.run_once)  # type: ignore[attr-defined,union-attr]
    events = published(publisher)
    assert any(isinstance(e, AeReported) and e.subject == "101-009" and e.data.grade == 5 for e in events)
