"""Eligibility and dose fields through the form mapping (ODM, REDCap) and SDTM: what the protocol rules read."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from services.ingest.adapters.fhir import parse_fhir
from services.ingest.adapters.odm import parse_odm
from services.ingest.normalise import InvalidBody
from services.ingest.sources import AuthConfig, FieldMap, SourceConfig, SourceMapping
from shared.events import DoseData, EnrollmentData
from tests.unit.ingest.conftest import SECRET, TRIAL

ENROL = {
    "ARM": "arm",
    "RFICDTC": "enrolled_at",
    "CARTDT": "car_t_infused_on",
    "IE_ANTITUM": "history.anti_tumour_therapy",
    "IE_VACC_DT": "history_on.live_vaccine",
}
DOSE = {
    "EXSTDTC": "administered_at",
    "EXLOT": "lot",
    "TOTCELL": "total_cells",
    "WEIGHT": "weight_kg",
    "VIAB": "release_viability_percent",
    "STERIL": "release_sterility",
    "PATHOG": "release_pathogens",
    "PREMED": "premedication_drug",
    "PREMEDDOSE": "premedication_dose_mg",
    "PREMEDDTC": "premedication_given_at",
}


def source() -> SourceConfig:
    return SourceConfig(
        kind="odm",
        trial=TRIAL,
        auth=AuthConfig(secret=SECRET),
        mapping=SourceMapping(
            forms={"DM": FieldMap(type="enrollment", items=ENROL), "EX": FieldMap(type="dose", items=DOSE)}
        ),
    )


def odm(form: str, items: dict[str, str]) -> bytes:
    data = "".join(f'<ItemData ItemOID="{k}" Value="{v}"/>' for k, v in items.items())
    return f"""<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><ClinicalData StudyOID="S">
      <SubjectData SubjectKey="101-004"><StudyEventData StudyEventOID="SE"><FormData FormOID="{form}">
      <ItemGroupData ItemGroupOID="{form}_G">{data}</ItemGroupData>
      </FormData></StudyEventData></SubjectData></ClinicalData></ODM>""".encode()


def test_an_enrolment_form_carries_the_car_t_date_and_history_answers() -> None:
    body = odm(
        "DM",
        {"ARM": "A", "RFICDTC": "2026-03-01", "CARTDT": "2026-01-20", "IE_ANTITUM": "N", "IE_VACC_DT": "2026-02-20"},
    )
    [record] = parse_odm(body, source=source()).records
    data = record.event.data
    assert isinstance(data, EnrollmentData)
    assert data.car_t_infused_on == date(2026, 1, 20)
    history = {h.code: (h.answer, h.last_on) for h in data.history}
    assert history == {"anti_tumour_therapy": (False, None), "live_vaccine": (None, date(2026, 2, 20))}


def test_a_dose_form_carries_lot_release_cells_and_premedication() -> None:
    items = {
        "EXSTDTC": "2026-03-02T10:00:00Z",
        "EXLOT": "UC-0042",
        "TOTCELL": "1.4e8",
        "WEIGHT": "70",
        "VIAB": "84.9 %",
        "STERIL": "Negative",
        "PATHOG": "pass",
        "PREMED": "Dexamethasone",
        "PREMEDDOSE": "5 mg",
        "PREMEDDTC": "2026-03-02T09:30:00Z",
    }
    [record] = parse_odm(odm("EX", items), source=source()).records
    dose = record.event.data
    assert isinstance(dose, DoseData)
    assert (dose.lot, dose.total_cells, dose.weight_kg) == ("UC-0042", Decimal("1.4e8"), Decimal(70))
    assert dose.release is not None and dose.release.viability_percent == Decimal("84.9")
    assert (dose.release.sterility, dose.release.pathogens, dose.release.purity) == (True, True, None)
    assert dose.premedication is not None and dose.premedication[0].dose_mg == Decimal(5)


def test_an_unreadable_release_result_is_refused_not_read_as_a_pass() -> None:
    items = {"EXSTDTC": "2026-03-02T10:00:00Z", "EXLOT": "UC-0042", "STERIL": "pending"}
    with pytest.raises(InvalidBody) as caught:
        parse_odm(odm("EX", items), source=source())
    assert any("release_sterility" in str(e) for e in caught.value.errors)


def test_unknown_history_targets_are_refused_by_the_mapping() -> None:
    with pytest.raises(ValueError, match="unknown target field"):
        FieldMap(type="enrollment", items={"X": "history.Bad Code"})


def medication_administration(**overrides: Any) -> dict[str, Any]:
    ext = "https://sentinel.example/fhir/StructureDefinition/"
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": "ma-1",
        "status": "completed",
        "subject": {"reference": "Patient/101-004"},
        "effectiveDateTime": "2026-03-02T10:00:00+01:00",
        "extension": [{"url": ext + "infusion-number", "valueInteger": 2}],
        "medicationReference": {"reference": "#msc"},
        "contained": [
            {
                "resourceType": "Medication",
                "id": "msc",
                "batch": {"lotNumber": "UC-0042"},
                "extension": [
                    {"url": ext + "release-viability", "valueDecimal": 84.9},
                    {"url": ext + "release-sterility", "valueBoolean": True},
                    {"url": ext + "release-tumorigenicity", "valueBoolean": False},
                ],
            }
        ],
        "dosage": {"dose": {"value": 2.0, "unit": "10^6 cells/kg", "system": "http://unitsofmeasure.org"}},
    }
    resource.update(overrides)
    return resource


def test_a_fhir_medication_administration_is_a_dose_with_its_lot_and_release() -> None:
    fhir_source = source().model_copy(update={"kind": "fhir"})
    [record] = parse_fhir(json.dumps(medication_administration()).encode(), source=fhir_source).records
    dose = record.event.data
    assert isinstance(dose, DoseData)
    assert (dose.dose_id, dose.number, dose.cells_per_kg, dose.lot) == (
        "ma-1",
        2,
        Decimal("2.0") * 1_000_000,
        "UC-0042",
    )
    assert dose.release is not None
    assert (dose.release.viability_percent, dose.release.sterility, dose.release.tumorigenicity) == (
        Decimal("84.9"),
        True,
        False,
    )


def test_a_fhir_dose_entered_in_error_retracts_it_and_a_bad_dose_value_names_the_field() -> None:
    fhir_source = source().model_copy(update={"kind": "fhir"})
    [record] = parse_fhir(
        json.dumps(medication_administration(status="entered-in-error")).encode(), source=fhir_source
    ).records
    assert record.event.header.type == "status" and record.event.data.record_type == "dose"  # type: ignore[union-attr]
    bad = medication_administration(dosage={"dose": {"value": "two", "unit": "cells/kg"}})
    with pytest.raises(InvalidBody) as caught:
        parse_fhir(json.dumps(bad).encode(), source=fhir_source)
    assert caught.value.errors[0]["loc"] == ("dosage",)
