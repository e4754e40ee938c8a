"""The review's "suspicious" items and the edges of its findings: what the reviewer's own tests do not pin."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from services.ingest.adapters import normalise_values as nv
from services.ingest.adapters.fhir import parse_fhir
from services.ingest.adapters.odm import parse_odm
from services.ingest.adapters.records import MAX_RECORD_KEY
from services.ingest.adapters.redcap import parse_det
from services.ingest.models import RedcapCursor, RedcapTrigger
from services.ingest.normalise import InvalidBody, parse_body
from services.ingest.routes import canonical_record
from services.ingest.sources import AuthConfig, FieldMap, SourceConfig, SourceMapping
from shared.clock import FakeClock
from shared.events import CLINICAL_ADAPTER, AeData, LabData, LabResulted, Relatedness
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import FIXTURES, SECRET, TRIAL, AppFactory, webhook_id

TOKEN = "backfill-token-0123456789abcdef"
FHIR_SOURCE = SourceConfig(kind="fhir", trial=TRIAL, auth=AuthConfig(secret=SECRET))
BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/"


def only_ae(**extra: Any) -> AeData:
    resource = {
        "resourceType": "AdverseEvent",
        "id": "ae-1",
        "subject": {"reference": "https://ehr.example.org/fhir/Patient/101-004/_history/2"},
        "event": {"text": "Cytokine release syndrome"},
        **extra,
    }
    [record] = parse_fhir(json.dumps(resource).encode(), source=FHIR_SOURCE).records
    assert record.event.header.subject == "101-004"
    assert isinstance(record.event.data, AeData)
    return record.event.data


def test_msk_grade_true_is_not_grade_1() -> None:
    ae = only_ae(extension=[{"url": "http://mskcc.org/fhir#Grade", "valueInteger": True}])
    assert ae.grade is None and "UNMAPPED_VALUE:grade" in ae.flags


@pytest.mark.parametrize("code", ["Unassessable-Unclassifiable", "Conditional-Classified"])
def test_r4_causality_without_a_degree_is_unknown_and_flagged(code: str) -> None:
    assessment = {"coding": [{"code": code}]}
    ae = only_ae(suspectEntity=[{"causality": [{"assessment": assessment}]}])
    assert ae.relatedness is None and "UNMAPPED_VALUE:relatedness" in ae.flags


def test_an_unreadable_causality_is_flagged_even_beside_a_readable_one() -> None:
    entities = [
        {"causality": [{"assessment": {"coding": [{"code": "Possible"}]}}]},
        {"causality": [{"assessment": {"coding": [{"code": "Unassessable-Unclassifiable"}]}}]},
    ]
    ae = only_ae(suspectEntity=entities)
    assert ae.relatedness == Relatedness.POSSIBLE and "UNMAPPED_VALUE:relatedness" in ae.flags


def test_r4_seriousness_code_as_a_criterion() -> None:
    criterion = {
        "url": BACKPORT + "seriousness-criteria",
        "extension": [
            {"url": "criterionCode", "valueCodeableConcept": {"coding": [{"code": "SeriousResultsInDeath"}]}},
            {"url": "criterionPresent", "valueBoolean": True},
        ],
    }
    ae = only_ae(extension=[criterion])
    assert ae.seriousness is not None and ae.seriousness.death is True


def test_free_text_speaking_of_a_death_is_read_as_fatal_and_flagged() -> None:
    ae = only_ae(seriousness={"text": "Fatal event"}, outcome={"text": "Patient died on day 9"})
    assert ae.serious is True and ae.seriousness is not None and ae.seriousness.death is True
    assert ae.outcome == "FATAL"
    assert {"UNMAPPED_VALUE:serious", "UNMAPPED_VALUE:outcome"} <= set(ae.flags)
    assert ae.raw is not None and ae.raw["outcome"] == "Patient died on day 9"


def test_unreadable_free_text_is_flagged_and_a_fatal_coding_wins() -> None:
    ae = only_ae(seriousness={"text": "see narrative"}, outcome={"coding": [{"code": "recovering"}, {"code": "fatal"}]})
    assert ae.serious is None and "UNMAPPED_VALUE:serious" in ae.flags
    assert ae.outcome == "FATAL" and "UNMAPPED_VALUE:outcome" not in ae.flags


@pytest.mark.parametrize("text", ["Grade 3-4", "CTCAE 5.0", "Grade 2 (was Grade 3)", "Stage 3"])
def test_ambiguous_grade_text_is_refused(text: str) -> None:
    with pytest.raises(nv.UnreadableValue):
        nv.grade(text)


def test_over_long_ids_make_a_record_key_that_fits_its_column() -> None:
    event = {
        "id": "m",
        "type": "ae",
        "study": "S" * 200,
        "site": "X",
        "subject": "P" * 200,
        "data": {"ae_id": "A" * 200, "version": 1, "term": "Fever"},
    }
    [parsed] = parse_body(json.dumps(event).encode())
    one, other = canonical_record(parsed), canonical_record(parsed)
    assert len(one.record_key) <= MAX_RECORD_KEY and one.record_key == other.record_key


def test_an_ae_version_beyond_what_is_stored_is_refused_before_publishing() -> None:
    event = {"id": "m", "type": "ae", "study": "S", "site": "X", "subject": "P"}
    event["data"] = {"ae_id": "A", "version": 2**31, "term": "Fever"}
    with pytest.raises(InvalidBody) as caught:
        parse_body(json.dumps(event).encode())
    assert caught.value.errors[0]["loc"] == ("data", "version")


def test_det_with_an_over_long_event_name_is_refused() -> None:
    body = f"project_id=42&record=101-001&instrument=ae&redcap_event_name={'e' * 101}".encode()
    with pytest.raises(InvalidBody) as caught:
        parse_det(body, project_id="42")
    assert caught.value.errors[0]["loc"] == ("redcap_event_name",)


def test_odm_log_lines_share_the_date_of_a_non_repeating_group() -> None:
    body = b"""<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><ClinicalData StudyOID="S">
      <SubjectData SubjectKey="101-004"><StudyEventData StudyEventOID="SE"><FormData FormOID="LB">
      <ItemGroupData ItemGroupOID="LB_HEAD"><ItemData ItemOID="LBDTC" Value="2026-03-01T08:00:00Z"/></ItemGroupData>
      <ItemGroupData ItemGroupOID="LB_LOG" ItemGroupRepeatKey="1">
        <ItemData ItemOID="LBTESTCD" Value="NEUT"/><ItemData ItemOID="LBORRES" Value="0.2"/></ItemGroupData>
      <ItemGroupData ItemGroupOID="LB_LOG" ItemGroupRepeatKey="2">
        <ItemData ItemOID="LBTESTCD" Value="PLAT"/><ItemData ItemOID="LBORRES" Value="180"/></ItemGroupData>
      </FormData></StudyEventData></SubjectData></ClinicalData></ODM>"""
    items = {"LBTESTCD": "test", "LBORRES": "value", "LBDTC": "collected_at"}
    source = SourceConfig(
        kind="odm",
        trial=TRIAL,
        auth=AuthConfig(secret=SECRET),
        mapping=SourceMapping(forms={"LB": FieldMap(type="lab", items=items)}),
    )
    labs = [r.event.data for r in parse_odm(body, source=source).records]
    assert all(isinstance(lab, LabData) for lab in labs)
    assert {(lab.test, lab.collected_at.isoformat()) for lab in labs if isinstance(lab, LabData)} == {
        ("NEUT", "2026-03-01T08:00:00+00:00"),
        ("PLAT", "2026-03-01T08:00:00+00:00"),
    }
    # line 1 keeps the form's own path: the id it had while the log had a single line
    assert sorted(lab.result_id for lab in labs if isinstance(lab, LabData)) == ["SE[1]/LB[1]", "SE[1]/LB[1]/LB_LOG[2]"]


def _post_lab(client: TestClient, value: str) -> Any:
    row = {"DOMAIN": "LB", "USUBJID": "101-001", "LBSEQ": 1, "LBTESTCD": "NEUT", "LBORRES": value}
    row["LBDTC"] = "2026-03-01T08:00:00Z"
    return client.post(
        "/v1/sources/backfill/sdtm",
        content=json.dumps({"rows": [row]}),
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )


def test_a_lab_corrected_back_is_published_again_and_a_repost_is_a_duplicate(
    make_client: AppFactory, publisher: FakePublisher
) -> None:
    client = make_client(
        {"sources": {"backfill": {"kind": "sdtm", "trial": TRIAL, "auth": {"scheme": "bearer", "secret": TOKEN}}}}
    )
    assert [_post_lab(client, v).status_code for v in ("0.4", "4.0", "0.4", "0.4")] == [202, 202, 202, 200]
    envelopes = [CLINICAL_ADAPTER.validate_json(v) for _, _, v in publisher.messages]
    assert [e.data.value for e in envelopes if isinstance(e, LabResulted)] == ["0.4", "4.0", "0.4"]
    assert len({e.id for e in envelopes}) == 3


def _signed(client: TestClient, clock: FakeClock) -> Any:
    event = {"id": "msg-1", "type": "ae", "study": TRIAL, "site": "S", "subject": "101-004"}
    event["data"] = {"ae_id": "AE-1", "version": 1, "term": "Fever"}
    raw = json.dumps(event).encode()
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id(raw), int(clock.now().timestamp()), raw)
    return client.post("/v1/sources/edc/events", content=raw, headers={**headers, "content-type": "application/json"})


def test_failed_authentications_have_their_own_limit(make_client: AppFactory, clock: FakeClock) -> None:
    client = make_client({"sources": {"edc": {"kind": "canonical", "trial": TRIAL, "auth": {"secret": SECRET}}}})
    answers = [client.post("/v1/sources/edc/events", content=b"{}").status_code for _ in range(12)]
    assert answers[:10] == [401] * 10 and answers[10:] == [429, 429]
    assert _signed(client, clock).status_code == 202  # the real sender is not locked out


def test_unmappable_redcap_forms_are_kept_counted_and_the_cursor_moves_on(
    make_client: AppFactory, publisher: FakePublisher
) -> None:
    row = {"record_id": "101-008", "redcap_event_name": "treatment_arm_1", "lbdat": "next tuesday", "anc": "1.1"}
    sources = yaml.safe_load((FIXTURES / "redcap/sources.yaml").read_text())
    env = {"TEST_DET_TOKEN": "det-token-for-project-42-abcdef", "TEST_REDCAP_TOKEN": "0123456789ABCDEF0123456789ABCDEF"}
    client = make_client(sources, env=env, transport=httpx.MockTransport(lambda _: httpx.Response(200, json=[row])))
    client.portal.call(client.app.state.redcap_sync.run_once)  # type: ignore[attr-defined,union-attr]
    with Session(client.app.state.runtime.engine) as session:  # type: ignore[attr-defined]
        [kept] = session.exec(select(RedcapTrigger)).all()
        assert session.exec(select(RedcapCursor)).first() is not None
    assert (kept.state, kept.record, kept.instrument, kept.event) == (
        "unmappable",
        "101-008",
        "labs",
        "treatment_arm_1",
    )
    assert kept.last_error is not None and "collected_at" in kept.last_error
    metrics = client.get("/metrics", follow_redirects=True).text
    assert 'sentinel_ingest_redcap_unmappable_forms_total{kind="reconcile"} 1.0' in metrics
    assert publisher.messages == []
