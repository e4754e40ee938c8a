"""The anticoagulation flag on a lab (CTCAE grades INR against baseline only then) comes through the form
adapters (ODM items, REDCap fields) when a source maps an item to it, and through canonical JSON."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from services.ingest.adapters.fields import lab_from_fields
from services.ingest.sources import LAB_FIELDS
from shared.events import LabData

FIELDS = {"test": "INR", "value": "1.1", "collected_at": "2026-03-01T09:00:00+00:00"}


@pytest.mark.parametrize(("text", "expected"), [("Y", True), ("No", False), ("", None)])
def test_form_item_maps_to_the_flag(text: str, expected: bool | None) -> None:
    lab = lab_from_fields(
        {**FIELDS, "anticoagulated": text}, result_id="R-1", raw={}, zone=ZoneInfo("UTC"), baseline=False
    )
    assert lab is not None and lab.anticoagulated is expected


def test_unreadable_flag_is_kept_as_unknown_and_flagged() -> None:
    lab = lab_from_fields(
        {**FIELDS, "anticoagulated": "maybe"}, result_id="R-1", raw={}, zone=ZoneInfo("UTC"), baseline=False
    )
    assert lab is not None and lab.anticoagulated is None
    assert "UNMAPPED_VALUE:anticoagulated" in lab.flags


def test_sources_may_map_an_item_to_it() -> None:
    assert "anticoagulated" in LAB_FIELDS


def test_canonical_lab_carries_it() -> None:
    lab = LabData.model_validate({**FIELDS, "result_id": "R-1", "anticoagulated": True})
    assert lab.anticoagulated is True
