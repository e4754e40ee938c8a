"""FHIR R4 AdverseEvent (core and HL7 AE research backport) and laboratory Observations to canonical events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.adapters.fhir import parse_fhir
from services.ingest.normalise import InvalidBody
from services.ingest.sources import AuthConfig, SourceConfig
from shared.clock import FakeClock
from shared.events import CLINICAL_ADAPTER, AeData, AeReported, LabData, RecordStatusData, Relatedness, VitalsData
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.unit.conftest import FakePublisher
from tests.unit.ingest.conftest import SECRET, TRIAL, AppFactory, fixture_bytes, webhook_id

OBSERVATION_WITHOUT_CODE = {"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/1"}}
SOURCE = SourceConfig(kind="fhir", trial=TRIAL, timezone="Europe/Amsterdam", auth=AuthConfig(secret=SECRET))


def records(name: str) -> dict[str, Any]:
    outcome = parse_fhir(fixture_bytes(f"fhir/{name}"), source=SOURCE)
    return {r.record_key.rsplit(":", 1)[-1] + ("#" + str(i) if i else ""): r for i, r in enumerate(outcome.records)}


def test_backport_ae_reads_grade_criteria_causality_outcome_and_dates() -> None:
    [record] = parse_fhir(fixture_bytes("fhir/ae_backport_serious.json"), source=SOURCE).records
    ae = record.event.data
    assert isinstance(ae, AeData)
    assert (ae.ae_id, ae.version, ae.grade, ae.serious) == ("ae-101-004-7", 2, 3, True)
    assert ae.seriousness is not None and ae.seriousness.ticked() == ["hospitalization"]
    assert ae.relatedness == Relatedness.POSSIBLE
    assert (ae.onset, ae.end, ae.outcome) == ("2026-03-02", "2026-03-09", "RECOVERED/RESOLVED")
    assert ae.meddra_code == "10052015"
    # 'detected' has no offset: read in the source's zone (Amsterdam, UTC+1 in March) and flagged
    assert ae.awareness_at == datetime(2026, 3, 3, 7, 40, tzinfo=UTC)
    assert "NAIVE_TIME_IN_SOURCE_ZONE:awareness_at" in ae.flags
    assert ae.raw is not None and ae.raw["grade"].startswith("C41340") and ae.raw["seriousness"] == "serious"
    assert record.delivery_id == "AdverseEvent/ae-101-004-7/_history/2"
    assert record.event.header.subject == "101-004" and record.event.header.study == TRIAL


def test_core_bundle_keeps_contradictions_flagged_and_never_downgrades() -> None:
    outcome = parse_fhir(fixture_bytes("fhir/ae_core_bundle.json"), source=SOURCE)
    death, duplicate, pyrexia, retracted = outcome.records
    assert isinstance(death.event.data, AeData)
    assert death.event.data.serious is False and death.event.data.outcome == "FATAL"
    assert "SERIOUS_FLAG_INCONSISTENT" in death.event.data.flags
    assert death.event.data.onset == "2026-02" and "PARTIAL_ONSET" in death.event.data.flags
    assert death.event.data.relatedness == Relatedness.UNLIKELY
    assert duplicate.delivery_id == death.delivery_id  # the searchset repeats an entry: same delivery id
    assert isinstance(pyrexia.event.data, AeData) and pyrexia.event.data.serious is True
    assert "SERIOUS_WITHOUT_CRITERIA" in pyrexia.event.data.flags
    assert isinstance(retracted.event.data, RecordStatusData)
    assert (retracted.event.data.record_id, retracted.event.data.status) == ("ae-102-001-3", "entered_in_error")
    assert any("potential" in note for note in outcome.ignored)
    assert any(note.startswith("Patient/") for note in outcome.ignored)


def test_lab_bundle_quirks() -> None:
    outcome = parse_fhir(fixture_bytes("fhir/labs_bundle.json"), source=SOURCE)
    labs = {r.event.data.result_id: r.event.data for r in outcome.records if isinstance(r.event.data, LabData)}
    hgb = labs["hgb-1"]  # g/dL label on numbers that look like mmol/L
    assert (hgb.test, hgb.loinc, hgb.value, hgb.unit) == ("HGB", "718-7", "6.9", "g/dL")
    assert "UNIT_RANGE_MISMATCH" in hgb.flags and hgb.raw is not None and hgb.raw["interpretation"] == "L"
    plt = labs["plt-7"]  # wrong LOINC URI, K/mcL, free-text range, naive time
    assert (plt.test, plt.value, plt.unit, plt.lln, plt.uln) == ("PLAT", "41", "10^3/uL", Decimal(150), Decimal(400))
    assert {"LOINC_SYSTEM_URI", "NON_UCUM_UNIT", "REF_RANGE_FROM_TEXT"} <= set(plt.flags)
    assert plt.raw is not None and plt.raw["unit"] == "K/mcL"
    anc = labs["anc-3"]  # censored, preliminary
    assert (anc.test, anc.value, anc.unit) == ("NEUT", "<0.1", "10^9/L")
    assert {"CENSORED_VALUE", "PRELIMINARY_RESULT"} <= set(anc.flags)
    mismatch = labs["hgb-2"]  # g/L value, g/dL range: the range is not used against the value
    assert (mismatch.lln, mismatch.uln) == (None, None) and "RANGE_UNIT_MISMATCH" in mismatch.flags
    statuses = [r.event.data for r in outcome.records if isinstance(r.event.data, RecordStatusData)]
    assert [(s.record_type, s.record_id, s.status) for s in statuses] == [("lab", "crea-old", "entered_in_error")]
    assert outcome.ignored == []
    [bp] = [r.event.data for r in outcome.records if isinstance(r.event.data, VitalsData)]  # valueString "120/80"
    assert (bp.vitals_id, bp.systolic_bp, bp.diastolic_bp) == ("bp-1", 120, 80)


def test_percentage_loinc_is_not_graded_as_a_count() -> None:
    body = {
        "resourceType": "Observation",
        "id": "neut-pct",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "770-8"}]},
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": "2026-03-02T07:00:00Z",
        "valueQuantity": {"value": 12, "unit": "%"},
    }
    [record] = parse_fhir(json.dumps(body).encode(), source=SOURCE).records
    assert isinstance(record.event.data, LabData)
    assert record.event.data.test is None and record.event.data.loinc == "770-8"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"resourceType": "Patient"}, ("resourceType",)),
        ({"resourceType": "AdverseEvent", "id": "x", "event": {"text": "Fever"}}, ("subject",)),
        ({"resourceType": "AdverseEvent", "id": "x", "subject": {"reference": "Patient/1"}}, ("event",)),
        (
            {
                "resourceType": "Bundle",
                "entry": [
                    {"resource": {"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/1"}}}
                ],
            },
            ("entry", 0, "resource", "code"),
        ),
    ],
)
def test_errors_point_into_the_resource(body: dict[str, Any], pointer: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidBody) as caught:
        parse_fhir(json.dumps(body).encode(), source=SOURCE)
    assert caught.value.errors[0]["loc"] == pointer


def _post(client: TestClient, clock: FakeClock, raw: bytes) -> Any:
    headers = signature_headers(WebhookSecret.parse(SECRET), webhook_id(raw), int(clock.now().timestamp()), raw)
    return client.post(
        "/v1/sources/ehr/fhir", content=raw, headers={**headers, "content-type": "application/fhir+json"}
    )


def test_endpoint_publishes_dedupes_the_searchset_and_answers_stale_versions(
    make_client: AppFactory, clock: FakeClock, publisher: FakePublisher
) -> None:
    client = make_client({"sources": {"ehr": {"kind": "fhir", "trial": TRIAL, "auth": {"secret": SECRET}}}})
    response = _post(client, clock, fixture_bytes("fhir/ae_core_bundle.json"))
    assert response.status_code == 202, response.text
    result = response.json()
    assert len(result["accepted"]) == 3 and len(result["duplicates"]) == 1 and len(result["ignored"]) == 2
    assert len(publisher.messages) == 3

    v2 = fixture_bytes("fhir/ae_backport_serious.json")
    assert _post(client, clock, v2).status_code == 202
    older = json.loads(v2)
    older["meta"]["versionId"] = "1"
    replay = _post(client, clock, json.dumps(older).encode())
    assert replay.status_code == 200
    assert replay.json()["stale"] == ["AdverseEvent/ae-101-004-7/_history/1"]
    envelope = CLINICAL_ADAPTER.validate_json(publisher.messages[-1][2])
    assert isinstance(envelope, AeReported) and envelope.data.version == 2
    assert envelope.data.first_received_at == clock.now()
