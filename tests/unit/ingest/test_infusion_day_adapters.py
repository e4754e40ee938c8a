"""What the formats carry for infusion day: FHIR vital-sign Observations (Fahrenheit, the BP panel), the FHIR
ae-review Observation, SDTM VS rows, an AE onset time (FHIR, SDTM AESTDTC, an ODM time item), and the CDASH
AEYN question on an ODM form as the AE review record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from services.ingest.adapters.fhir import parse_fhir
from services.ingest.adapters.infusion_day import celsius
from services.ingest.adapters.odm import parse_odm
from services.ingest.adapters.sdtm import parse_sdtm
from services.ingest.normalise import InvalidBody
from services.ingest.sources import AuthConfig, AuthScheme, SourceConfig, parse_sources
from shared.events import AeData, AeReviewData, RecordStatusData, VitalsData

TRIAL = "NCT07212335"
FHIR = SourceConfig(kind="fhir", trial=TRIAL, timezone="Europe/Amsterdam", auth=AuthConfig(secret="whsec_" + "A" * 32))
SDTM = SourceConfig(
    kind="sdtm",
    trial=TRIAL,
    timezone="Europe/Amsterdam",
    auth=AuthConfig(scheme=AuthScheme.BEARER, secret="backfill-token-0123456789abcdef"),
)
SUBJECT = {"reference": "Patient/201-001"}


def observation(rid: str, code: str, quantity: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": SUBJECT,
        "effectiveDateTime": "2026-03-02T10:15:00+01:00",
    }
    if quantity is not None:
        body["valueQuantity"] = quantity
    return {**body, **extra}


def parse(resource: dict[str, Any]) -> list[Any]:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    return [r.event.data for r in parse_fhir(json.dumps(bundle).encode(), source=FHIR).records]


def test_celsius_conversion_keeps_the_fever_boundary() -> None:
    assert celsius(Decimal("100.4"), "[degF]", field="t") == Decimal("38.00")
    assert celsius(Decimal("38.0"), "Cel", field="t") == Decimal("38.0")


def test_a_fhir_temperature_in_fahrenheit_is_a_vitals_record_in_celsius() -> None:
    [vitals] = parse(
        observation(
            "T1", "8310-5", {"value": 102.2, "unit": "degF", "system": "http://unitsofmeasure.org", "code": "[degF]"}
        )
    )
    assert isinstance(vitals, VitalsData)
    assert vitals.temperature_c == Decimal("39.00") and vitals.raw == {"temperature_c": "102.2 [degF]"}
    assert vitals.measured_at == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def test_the_fhir_bp_panel_gives_both_pressures_and_spo2_has_two_loinc_codes() -> None:
    panel = observation(
        "BP1",
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 162, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 95, "code": "mm[Hg]"},
            },
        ],
    )
    [bp] = parse(panel)
    assert (bp.systolic_bp, bp.diastolic_bp) == (Decimal(162), Decimal(95))
    [spo2] = parse(observation("O1", "2708-6", {"value": 94, "code": "%"}))
    assert spo2.spo2 == Decimal(94)


def test_a_vitals_observation_entered_in_error_is_a_status_and_an_unknown_unit_is_refused() -> None:
    [status] = parse(observation("T1", "8310-5", {"value": 38, "code": "Cel"}, status="entered-in-error"))
    assert isinstance(status, RecordStatusData) and (status.record_type, status.record_id) == ("vitals", "T1")
    with pytest.raises(InvalidBody):
        parse(observation("T2", "8310-5", {"value": 311, "code": "K"}))


def test_the_fhir_ae_review_observation() -> None:
    review = {
        "resourceType": "Observation",
        "id": "AER-4",
        "status": "final",
        "code": {"coding": [{"system": "urn:sentinel:codes", "code": "ae-review"}]},
        "subject": SUBJECT,
        "encounter": {"display": "week 4"},
        "effectiveDateTime": "2026-03-30T10:00:00+02:00",
        "valueBoolean": False,
    }
    [data] = parse(review)
    assert isinstance(data, AeReviewData)
    assert (data.visit, data.new_aes, data.assessed_at) == ("week 4", False, datetime(2026, 3, 30, 8, tzinfo=UTC))


def test_a_fhir_adverse_event_onset_time_is_kept_at_the_senders_offset() -> None:
    ae = {
        "resourceType": "AdverseEvent",
        "id": "AE-9",
        "actuality": "actual",
        "subject": SUBJECT,
        "event": {"text": "Chills"},
        "date": "2026-03-02T23:30:00+01:00",
    }
    [data] = parse(ae)
    assert isinstance(data, AeData)
    assert data.onset == "2026-03-02"  # the site's date, though it is 22:30 UTC
    assert data.onset_at == datetime(2026, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=1)))


def test_sdtm_vs_rows_and_an_aestdtc_with_a_time() -> None:
    rows = [
        {
            "DOMAIN": "VS",
            "USUBJID": "201-001",
            "VSSEQ": "1",
            "VSTESTCD": "TEMP",
            "VSORRES": "101.3",
            "VSORRESU": "F",
            "VSDTC": "2026-03-02T10:30",
        },
        {
            "DOMAIN": "VS",
            "USUBJID": "201-001",
            "VSSEQ": "2",
            "VSTESTCD": "SYSBP",
            "VSORRES": "88",
            "VSORRESU": "mmHg",
            "VSDTC": "2026-03-02T10:30",
        },
        {
            "DOMAIN": "VS",
            "USUBJID": "201-001",
            "VSSEQ": "3",
            "VSTESTCD": "HEIGHT",
            "VSORRES": "172",
            "VSDTC": "2026-03-02",
        },
        {
            "DOMAIN": "AE",
            "USUBJID": "201-001",
            "AESEQ": "1",
            "AETERM": "Rigors",
            "AETOXGR": "2",
            "AESTDTC": "2026-03-02T11:05",
        },
    ]
    outcome = parse_sdtm(json.dumps(rows).encode(), content_type="application/json", source=SDTM)
    temperature, pressure, ae = (r.event.data for r in outcome.records)
    assert isinstance(temperature, VitalsData) and temperature.temperature_c == Decimal("38.50")
    assert temperature.measured_at == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # naive: the source's zone
    assert isinstance(pressure, VitalsData) and pressure.systolic_bp == Decimal(88)
    assert outcome.ignored == ["201-001 VSSEQ-3: VSTESTCD 'HEIGHT' is not monitored"]
    assert isinstance(ae, AeData) and ae.onset == "2026-03-02"
    assert ae.onset_at is not None and ae.onset_at.astimezone(UTC) == datetime(2026, 3, 2, 10, 5, tzinfo=UTC)
    assert "NAIVE_TIME_IN_SOURCE_ZONE:onset_at" in ae.flags


ODM_SOURCES = {
    "sources": {
        "oc": {
            "kind": "odm",
            "trial": TRIAL,
            "timezone": "Europe/Amsterdam",
            "auth": {"scheme": "standard-webhooks", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
            "mapping": {
                "forms": {
                    "F_AE": {
                        "type": "ae",
                        "items": {
                            "I_AESPID": "id",
                            "I_AETERM": "term",
                            "I_AESTDAT": "onset",
                            "I_AESTTIM": "onset_time",
                        },
                    },
                    "F_AEYN": {
                        "type": "ae_review",
                        "items": {"I_AEYN": "new_aes", "I_AEDAT": "assessed_at", "I_VISIT": "visit"},
                    },
                    "F_VS": {
                        "type": "vitals",
                        "items": {
                            "I_VSDTC": "measured_at",
                            "I_TEMP": "temperature_c",
                            "I_SYSBP": "systolic_bp",
                            "I_DIABP": "diastolic_bp",
                        },
                    },
                }
            },
        }
    }
}
ODM = b"""<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" FileOID="F" FileType="Snapshot" ODMVersion="1.3"
     CreationDateTime="2026-03-30T10:00:00+00:00">
  <ClinicalData StudyOID="S" MetaDataVersionOID="v1">
    <SubjectData SubjectKey="201-001">
      <StudyEventData StudyEventOID="SE_W4">
        <FormData FormOID="F_AEYN"><ItemGroupData ItemGroupOID="IG" ItemGroupRepeatKey="1">
          <ItemData ItemOID="I_AEYN" Value="N"/><ItemData ItemOID="I_AEDAT" Value="2026-03-30"/>
          <ItemData ItemOID="I_VISIT" Value="week 4"/>
        </ItemGroupData></FormData>
      </StudyEventData>
      <StudyEventData StudyEventOID="SE_D0">
        <FormData FormOID="F_VS"><ItemGroupData ItemGroupOID="IG" ItemGroupRepeatKey="1">
          <ItemData ItemOID="I_VSDTC" Value="2026-03-02T10:15"/><ItemData ItemOID="I_TEMP" Value="38.0"/>
          <ItemData ItemOID="I_SYSBP" Value="120"/><ItemData ItemOID="I_DIABP" Value="80"/>
        </ItemGroupData></FormData>
        <FormData FormOID="F_AE"><ItemGroupData ItemGroupOID="IG" ItemGroupRepeatKey="1">
          <ItemData ItemOID="I_AESPID" Value="1"/><ItemData ItemOID="I_AETERM" Value="Chills"/>
          <ItemData ItemOID="I_AESTDAT" Value="2026-03-02"/><ItemData ItemOID="I_AESTTIM" Value="13:40"/>
        </ItemGroupData></FormData>
      </StudyEventData>
    </SubjectData>
  </ClinicalData>
</ODM>"""


def test_odm_forms_carry_the_aeyn_review_vitals_and_a_separate_onset_time() -> None:
    source = parse_sources(ODM_SOURCES, {})["oc"].config
    outcome = parse_odm(ODM, source=source)
    kinds = {type(r.event.data): r.event.data for r in outcome.records}
    review = kinds[AeReviewData]
    assert (review.new_aes, review.visit) == (False, "week 4")
    vitals = kinds[VitalsData]
    assert (vitals.temperature_c, vitals.systolic_bp) == (Decimal("38.0"), Decimal(120))
    ae = kinds[AeData]
    assert ae.onset_at is not None and ae.onset_at.astimezone(UTC) == datetime(2026, 3, 2, 12, 40, tzinfo=UTC)


def test_an_ae_review_form_needs_its_answer_and_date() -> None:
    broken = json.loads(json.dumps(ODM_SOURCES))
    broken["sources"]["oc"]["mapping"]["forms"]["F_AEYN"]["items"] = {"I_AEYN": "new_aes"}
    with pytest.raises(ValueError, match="assessed_at"):
        parse_sources(broken, {})


def test_a_vital_sign_sentinel_does_not_monitor_is_ignored_and_said_so() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": observation("W1", "29463-7", {"value": 71, "code": "kg"})}],
    }
    outcome = parse_fhir(json.dumps(bundle).encode(), source=FHIR)
    assert outcome.records == [] and outcome.ignored == ["Observation/W1: vital signs with nothing Sentinel monitors"]
