"""Transfusions and protocol samples as the formats carry them: canonical events, SDTM PR/CM/BE, FHIR Procedure and
Specimen, ODM/REDCap forms; what is not a transfusion is ignored and said so."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.ingest.adapters.fhir import parse_fhir
from services.ingest.adapters.forms import Place, map_instance
from services.ingest.adapters.records import Outcome
from services.ingest.adapters.sdtm import parse_sdtm
from services.ingest.adapters.transfusions import product_from_text
from services.ingest.normalise import InvalidBody, parse_body, to_envelope
from services.ingest.sources import AuthConfig, AuthScheme, FieldMap, SourceConfig
from shared.events import RecordStatusData, SampleCollected, SampleData, TransfusionAdministered, TransfusionData
from tests.unit.ingest.conftest import SECRET, TRIAL

SDTM = SourceConfig(kind="sdtm", trial=TRIAL, auth=AuthConfig(scheme=AuthScheme.BEARER, secret="t" * 32))
FHIR = SourceConfig(kind="fhir", trial=TRIAL, timezone="Europe/Amsterdam", auth=AuthConfig(secret=SECRET))


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("PLATELET TRANSFUSION", "platelets"),
        ("Apheresis platelets, leukoreduced", "platelets"),
        ("Packed red blood cells", "red_cells"),
        ("PRBC", "red_cells"),
        ("Transfusion of red cells", "red_cells"),
        ("Fresh frozen plasma", "other"),
        ("Cryoprecipitate", "other"),
        ("Blood transfusion", "other"),
        ("Platelet count", None),
        ("Transfusion reaction", None),
        ("Plasma-Lyte 148", None),
        ("Albumin 20%", None),
        ("Dexamethasone", None),
        ("", None),
    ],
)
def test_the_product_a_text_names(text: str, product: str | None) -> None:
    assert product_from_text(text) == product


def test_a_canonical_transfusion_and_sample_reach_their_envelopes() -> None:
    body = [
        {
            "id": "tx-1",
            "type": "transfusion",
            "study": TRIAL,
            "site": "101",
            "subject": "101-001",
            "data": {
                "transfusion_id": "TX-1",
                "product": "platelets",
                "administered_at": "2026-03-20T10:00:00+01:00",
                "units": 1,
            },
        },
        {
            "id": "s-1",
            "type": "sample",
            "study": TRIAL,
            "site": "101",
            "subject": "101-001",
            "data": {"sample_id": "S-1", "kind": "immunology", "collected_at": "2026-03-09T08:00:00Z"},
        },
    ]
    tx, sample = parse_body(json.dumps({"events": body}).encode())
    received = datetime(2026, 3, 21, tzinfo=UTC)
    envelope = to_envelope("edc", tx, received)
    assert isinstance(envelope, TransfusionAdministered)
    assert envelope.time == datetime(2026, 3, 20, 9, tzinfo=UTC)
    assert isinstance(to_envelope("edc", sample, received), SampleCollected)
    body[0]["data"]["product"] = "plasma"  # type: ignore[index]
    with pytest.raises(InvalidBody) as refused:
        parse_body(json.dumps({"events": body}).encode())
    assert refused.value.errors[0]["loc"] == ("events", 0, "data", "product")


def sdtm(rows: list[dict[str, Any]]) -> Outcome:
    return parse_sdtm(json.dumps({"rows": rows}).encode(), content_type="application/json", source=SDTM)


def test_sdtm_pr_and_cm_rows_are_transfusions_when_they_name_a_blood_product() -> None:
    base = {"STUDYID": TRIAL, "USUBJID": "101-001", "SITEID": "101"}
    outcome = sdtm(
        [
            {**base, "DOMAIN": "PR", "PRSEQ": 1, "PRTRT": "PLATELET TRANSFUSION", "PRSTDTC": "2026-03-20T10:30"},
            {**base, "DOMAIN": "PR", "PRSEQ": 2, "PRTRT": "BONE MARROW BIOPSY", "PRSTDTC": "2026-03-20"},
            {
                **base,
                "DOMAIN": "CM",
                "CMSEQ": 3,
                "CMTRT": "PACKED RED BLOOD CELLS",
                "CMDOSE": "2",
                "CMDOSU": "UNIT",
                "CMSTDTC": "2026-03-21",
            },
            {**base, "DOMAIN": "CM", "CMSEQ": 4, "CMTRT": "FRESH FROZEN PLASMA", "CMSTDTC": "2026-03-22"},
            {
                **base,
                "DOMAIN": "CM",
                "CMSEQ": 5,
                "CMTRT": "FRESH FROZEN PLASMA",
                "CMCAT": "BLOOD PRODUCTS",
                "CMDOSE": "250",
                "CMDOSU": "mL",
                "CMSTDTC": "2026-03-22T09:00",
            },
            {**base, "DOMAIN": "CM", "CMSEQ": 6, "CMTRT": "DEXAMETHASONE", "CMSTDTC": "2026-03-02"},
        ]
    )
    data = [r.event.data for r in outcome.records]
    assert all(isinstance(d, TransfusionData) for d in data)
    platelets, red_cells, plasma = data
    assert isinstance(platelets, TransfusionData) and isinstance(red_cells, TransfusionData)
    assert isinstance(plasma, TransfusionData)
    assert (platelets.transfusion_id, platelets.product) == ("PRSEQ-1", "platelets")
    assert (red_cells.product, red_cells.units) == ("red_cells", Decimal(2))
    # CMSTDTC without a time: the end of that day at the source (UTC here), the cautious reading
    assert red_cells.administered_at == datetime(2026, 3, 21, 23, 59, 59, tzinfo=UTC)
    assert (plasma.product, plasma.volume_ml) == ("other", Decimal(250))
    assert len(outcome.ignored) == 3
    assert any("BONE MARROW BIOPSY" in note for note in outcome.ignored)
    assert any("not filed as a blood product" in note for note in outcome.ignored)
    assert outcome.records[0].record_key == f"{TRIAL}:101-001:transfusion:PRSEQ-1"


def test_sdtm_be_collections_are_samples() -> None:
    base = {"STUDYID": TRIAL, "USUBJID": "101-001", "DOMAIN": "BE"}
    outcome = sdtm(
        [
            {
                **base,
                "BESEQ": 1,
                "BEREFID": "SPEC-77",
                "BETERM": "Collecting",
                "BECAT": "IMMUNOLOGY",
                "BESTDTC": "2026-03-09T08:15",
                "VISIT": "WEEK 1",
            },
            {**base, "BESEQ": 2, "BEREFID": "SPEC-77", "BETERM": "Shipping", "BESTDTC": "2026-03-10"},
        ]
    )
    [record] = outcome.records
    sample = record.event.data
    assert isinstance(sample, SampleData)
    assert (sample.sample_id, sample.kind, sample.visit) == ("SPEC-77", "immunology", "WEEK 1")
    assert outcome.ignored and "not a collection" in outcome.ignored[0]
    with pytest.raises(InvalidBody) as refused:
        sdtm([{**base, "BESEQ": 3, "BETERM": "Collecting", "BESTDTC": "2026-03-09"}])
    assert refused.value.errors[0]["loc"] == ("rows", 0, "BECAT"), "a sample without its kind names the column"


def fhir(resource: dict[str, Any]) -> Outcome:
    base = {"id": "r-1", "subject": {"reference": "Patient/101-001"}}
    return parse_fhir(json.dumps({**base, **resource}).encode(), source=FHIR)


def test_fhir_procedure_transfusions_by_product_code_or_text() -> None:
    coded = fhir(
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"text": "Transfusion"},
            "usedCode": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0426", "code": "PLTPH"}]}],
            "performedDateTime": "2026-03-20T10:00:00+01:00",
        }
    )
    [record] = coded.records
    data = record.event.data
    assert isinstance(data, TransfusionData)
    assert (data.product, data.administered_at) == ("platelets", datetime(2026, 3, 20, 9, tzinfo=UTC))
    by_text = fhir(
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {
                "coding": [{"system": "http://snomed.info/sct", "code": "0", "display": "Red blood cell transfusion"}]
            },
            "performedPeriod": {"start": "2026-03-21T08:00:00Z"},
        }
    )
    assert isinstance(by_text.records[0].event.data, TransfusionData)
    assert by_text.records[0].event.data.product == "red_cells"
    other = fhir({"resourceType": "Procedure", "status": "completed", "code": {"text": "Lumbar puncture"}})
    assert other.records == [] and "not a transfusion" in other.ignored[0]
    not_done = fhir({"resourceType": "Procedure", "status": "not-done", "code": {"text": "Platelet transfusion"}})
    assert not_done.records == []
    retracted = fhir(
        {"resourceType": "Procedure", "status": "entered-in-error", "code": {"text": "Platelet transfusion"}}
    )
    status = retracted.records[0].event.data
    assert isinstance(status, RecordStatusData) and (status.record_type, status.record_id) == ("transfusion", "r-1")
    with pytest.raises(InvalidBody) as refused:
        fhir({"resourceType": "Procedure", "status": "completed", "code": {"text": "Platelet transfusion"}})
    assert refused.value.errors[0]["loc"] == ("performedDateTime",)


def test_fhir_specimen_is_a_sample_of_its_type() -> None:
    outcome = fhir(
        {
            "resourceType": "Specimen",
            "status": "available",
            "type": {"text": "Immunology sample (whole blood)"},
            "collection": {"collectedDateTime": "2026-03-09T08:00:00Z"},
        }
    )
    sample = outcome.records[0].event.data
    assert isinstance(sample, SampleData)
    assert (sample.kind, sample.collected_at) == (
        "immunology sample (whole blood)",
        datetime(2026, 3, 9, 8, tzinfo=UTC),
    )
    unusable = fhir({"resourceType": "Specimen", "status": "unsatisfactory", "type": {"text": "Immunology"}})
    status = unusable.records[0].event.data
    assert isinstance(status, RecordStatusData) and (status.record_type, status.status) == ("sample", "deleted")


def test_transfusion_and_sample_forms() -> None:
    place = Place(study=TRIAL, site="101", subject="101-001", path="SE_W1/F_TX/IG_1")
    source = SourceConfig(
        kind="odm",
        trial=TRIAL,
        auth=AuthConfig(secret=SECRET),
        mapping={
            "forms": {"F_TX": {"type": "transfusion", "items": {"TXPROD": "product", "TXDTC": "administered_at"}}}
        },
    )
    outcome = Outcome()
    transfusion = FieldMap(
        type="transfusion", items={"TXPROD": "product", "TXDTC": "administered_at", "TXVOL": "volume_ml"}
    )
    values = {"TXPROD": "Platelets, apheresis", "TXDTC": "2026-03-20T10:00:00Z", "TXVOL": "300"}
    map_instance(values, mapping=transfusion, place=place, source=source, outcome=outcome)
    sample = FieldMap(type="sample", items={"SPDTC": "collected_at"}, sample_kind="immunology")
    map_instance({"SPDTC": "2026-03-09T08:00:00Z"}, mapping=sample, place=place, source=source, outcome=outcome)
    tx, collected = (r.event.data for r in outcome.records)
    assert isinstance(tx, TransfusionData) and (tx.product, tx.volume_ml) == ("platelets", Decimal(300))
    assert isinstance(collected, SampleData) and collected.kind == "immunology"
    with pytest.raises(ValueError, match="'product'"):
        FieldMap(type="transfusion", items={"TXDTC": "administered_at"})


def test_canonical_transfusions_samples_and_statuses_have_record_keys() -> None:
    from services.ingest.routes import canonical_record

    body = {
        "events": [
            {
                "id": "t",
                "type": "transfusion",
                "study": TRIAL,
                "site": "1",
                "subject": "S",
                "data": {"transfusion_id": "TX-1", "product": "other", "administered_at": "2026-03-20T10:00:00Z"},
            },
            {
                "id": "s",
                "type": "sample",
                "study": TRIAL,
                "site": "1",
                "subject": "S",
                "data": {"sample_id": "IMM-1", "collected_at": "2026-03-20T10:00:00Z"},
            },
            {
                "id": "w",
                "type": "subject_status",
                "study": TRIAL,
                "site": "1",
                "subject": "S",
                "data": {"status": "withdrawn"},
            },
        ]
    }
    keys = [canonical_record(e).record_key for e in parse_body(json.dumps(body).encode())]
    assert keys == [f"{TRIAL}:S:transfusion:TX-1", f"{TRIAL}:S:sample:IMM-1", f"{TRIAL}:S:subject_status:S"]


def test_ingest_knows_transfusions_and_samples_by_their_own_ids() -> None:
    """So a record deleted in REDCap later retracts the transfusion or sample safety stored, not the subject."""
    from services.ingest.intake import _record_id
    from services.ingest.redcap_sync import RECORD_TYPES

    tx = TransfusionData.model_validate(
        {"transfusion_id": "TX-9", "product": "red_cells", "administered_at": "2026-03-20T10:00:00Z"}
    )
    sample = SampleData(sample_id="IMM-4", collected_at=datetime(2026, 3, 30, tzinfo=UTC))
    assert (_record_id(tx, "101-001"), _record_id(sample, "101-001")) == ("TX-9", "IMM-4")
    assert {"transfusion", "sample"} <= set(RECORD_TYPES)


def test_every_record_is_known_by_the_id_safety_keeps_it_under() -> None:
    """A REDCap record that disappears is retracted by the id stored here: vitals and AE reviews must be stored
    under their own ids (safety drops a retracted reading by its vitals_id), never under the subject's."""
    from datetime import UTC, datetime

    from services.ingest.intake import _record_id
    from shared.events import AeReviewData, VitalsData

    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert _record_id(VitalsData(vitals_id="VS-30", measured_at=at, temperature_c="38.6"), "S") == "VS-30"
    assert _record_id(AeReviewData(review_id="AER-4", assessed_at=at, visit="week 4"), "S") == "AER-4"
