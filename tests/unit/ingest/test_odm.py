"""CDISC ODM 1.3 snapshots (OpenClinica and Rave flavours) through the sources file's ItemOID maps."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.ingest.adapters.odm import parse_odm
from services.ingest.normalise import InvalidBody
from services.ingest.sources import Source
from shared.events import AeData, LabData, RecordStatusData, Relatedness
from tests.unit.ingest.conftest import TRIAL, fixture_bytes, load_fixture_sources


@pytest.fixture(scope="module")
def sources() -> dict[str, Source]:
    return load_fixture_sources("odm/sources.yaml")


def by_type(outcome: Any, kind: type) -> list[Any]:
    return [r.event.data for r in outcome.records if isinstance(r.event.data, kind)]


def test_openclinica_snapshot(sources: dict[str, Source]) -> None:
    outcome = parse_odm(fixture_bytes("odm/openclinica_snapshot.xml"), source=sources["oc-cart"].config)
    [ae] = by_type(outcome, AeData)
    assert (ae.ae_id, ae.term, ae.serious, ae.seriousness) == ("1", "Encephalopathy", True, None)
    assert "SERIOUS_WITHOUT_CRITERIA" in ae.flags  # AESER=Y, criteria only in the free-text summary
    assert ae.relatedness == Relatedness.POSSIBLE and ae.outcome == "RECOVERING/RESOLVING"
    assert ae.raw["I_ADVER_AESEV"] == "SEVERE" and ae.raw["I_ADVER_AEREL"] == "POSSIBLY_RELATED"
    [removed] = by_type(outcome, RecordStatusData)
    assert (removed.record_type, removed.record_id, removed.status) == ("ae", "2", "deleted")
    labs = {lab.test: lab for lab in by_type(outcome, LabData)}
    assert set(labs) == {"CREAT", "HGB"}  # the blank platelet item is no result
    creat = labs["CREAT"]
    assert (creat.value, creat.unit, creat.lln, creat.uln, creat.baseline) == (
        "1.4",
        "mg/dL",
        Decimal("0.6"),
        Decimal("1.2"),
        True,
    )
    assert "REF_RANGE_FROM_TEXT" in creat.flags and creat.raw["I_2BASE_CREATR"] == "(Normal range, Male: 0.6 - 1.2)"
    assert creat.collected_at == datetime(2026, 2, 19, 23, 0, tzinfo=UTC)  # a date alone, at Amsterdam midnight
    assert labs["HGB"].unit == "mmol/L" and labs["HGB"].value == "5.1"
    assert {r.event.header.subject for r in outcome.records} == {"201-001"}
    assert outcome.ignored == ["201-001 SE_BASELINE[1]/F_CONMED[1]: form not mapped"]


def test_rave_dataset_with_bom_raw_dates_and_fatal_without_aeser(sources: dict[str, Source]) -> None:
    outcome = parse_odm(fixture_bytes("odm/rave_dataset.xml"), source=sources["rave"].config)
    fatal, headache = by_type(outcome, AeData)
    assert fatal.onset == "2026-03-01" and fatal.raw["AE.AESTDTC"] == "01 MAR 2026"
    assert fatal.outcome == "FATAL" and fatal.serious is None
    assert {"SERIOUS_FLAG_INCONSISTENT", "FATAL_WITHOUT_DEATH_CRITERION"} <= set(fatal.flags)
    assert headache.onset == "2026-02" and headache.serious is False and headache.outcome == "RECOVERED/RESOLVED"
    assert headache.relatedness == Relatedness.NOT_RELATED
    heads = [r.event.header for r in outcome.records]
    assert {(h.subject, h.site, h.study) for h in heads} == {("301-002", "301", TRIAL)}
    versions = [r.source_version for r in outcome.records if isinstance(r.event.data, AeData)]
    assert versions == ["t2026-03-04T08:00:00+00:00", None]
    labs = {lab.test: lab for lab in by_type(outcome, LabData)}
    assert labs["WBC"].unit == "10^9/L"  # from MeasurementUnitRef
    assert (labs["HGB"].value, labs["HGB"].unit) == ("71", "g/L")


def test_rave_audit_stream_is_refused(sources: dict[str, Source]) -> None:
    body = b"""<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:mdsol="http://www.mdsol.com/ns/odm/metadata">
      <ClinicalData StudyOID="S" mdsol:AuditSubCategoryName="Entered"/></ODM>"""
    with pytest.raises(InvalidBody) as caught:
        parse_odm(body, source=sources["rave"].config)
    assert "item-level" in caught.value.errors[0]["msg"]


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE ODM [<!ENTITY x "boom">]><ODM>&x;</ODM>',
        b"<ODM><ClinicalData>",
        b"<NotODM/>",
    ],
)
def test_unsafe_or_broken_xml_is_refused(sources: dict[str, Source], body: bytes) -> None:
    with pytest.raises(InvalidBody):
        parse_odm(body, source=sources["rave"].config)


def test_missing_term_points_at_the_form(sources: dict[str, Source]) -> None:
    body = b"""<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><ClinicalData StudyOID="S">
      <SubjectData SubjectKey="k"><StudyEventData StudyEventOID="E"><FormData FormOID="AE">
      <ItemGroupData ItemGroupOID="AE_LOG_LINE"><ItemData ItemOID="AE.AESER" Value="Y"/></ItemGroupData>
      </FormData></StudyEventData></SubjectData></ClinicalData></ODM>"""
    with pytest.raises(InvalidBody) as caught:
        parse_odm(body, source=sources["rave"].config)
    assert caught.value.errors[0]["loc"][-1] == "term"
