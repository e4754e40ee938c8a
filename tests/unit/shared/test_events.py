"""Canonical payload validation and envelope helpers: what an EDC integrator sees refused or kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import (
    CLINICAL_ADAPTER,
    SIGNAL_ADAPTER,
    AeData,
    AeReported,
    LabData,
    SaeDetected,
    SeriousnessCriteria,
    check_partial_date,
    deterministic_id,
    message_key,
)

AE = {"ae_id": "AE-1", "version": 1, "term": "Fever"}
LAB = {"result_id": "R-1", "test": "NEUT", "value": "0.4", "unit": "10^9/L", "collected_at": "2026-03-01T08:00:00Z"}


def ae(**changes: Any) -> AeData:
    return AeData.model_validate({**AE, **changes})


def lab(**changes: Any) -> LabData:
    payload = {**LAB, **changes}
    return LabData.model_validate({k: v for k, v in payload.items() if v is not None})


@pytest.mark.parametrize("value", ["2026", "2026-02", "2026-02-28", "2024-02-29"])
def test_partial_and_full_dates_are_kept_with_their_precision(value: str) -> None:
    assert ae(onset=value, end=value).onset == value


@pytest.mark.parametrize("value", ["2026-02-30", "2025-02-29", "2026-13", "2026-00", "26-02", "2026/02/01", ""])
def test_impossible_or_malformed_dates_are_refused(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ae(onset=value)
    assert caught.value.errors()[0]["loc"] == ("onset",)


def test_partial_date_with_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError):
        check_partial_date("2026-02\n")


def test_naive_awareness_time_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        ae(awareness_at="2026-03-01T08:00:00")
    assert caught.value.errors()[0]["loc"] == ("awareness_at",)


def test_aware_awareness_time_keeps_its_instant() -> None:
    data = ae(awareness_at="2026-03-01T10:00:00+05:30")
    assert data.awareness_at == datetime(2026, 3, 1, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize("grade", [0, 6, -1])
def test_grade_outside_1_to_5_is_refused(grade: int) -> None:
    with pytest.raises(ValidationError):
        ae(grade=grade)


@pytest.mark.parametrize("grade", [1, 5])
def test_grade_1_and_5_are_accepted(grade: int) -> None:
    assert ae(grade=grade).grade == grade


def test_lab_value_from_json_number_keeps_its_exact_text() -> None:
    document = json.loads('{"value": 0.10, "lln": 1.50}', parse_float=Decimal)
    data = lab(**document)
    assert data.value == "0.10"
    assert data.lln == Decimal("1.50")


def test_lab_integer_value_becomes_text() -> None:
    assert lab(value=7).value == "7"


def test_lab_binary_float_is_refused() -> None:
    with pytest.raises(ValidationError, match="binary floats"):
        lab(value=0.1)


def test_lab_censored_text_is_kept() -> None:
    assert lab(value="<0.2").value == "<0.2"


def test_lab_needs_test_or_loinc() -> None:
    with pytest.raises(ValidationError, match=r"'test' .* or 'loinc'"):
        lab(test=None)
    assert lab(test=None, loinc="26499-4").loinc == "26499-4"


def test_lab_malformed_loinc_is_refused() -> None:
    with pytest.raises(ValidationError):
        lab(loinc="abc")


def test_seriousness_ticked_lists_only_true_criteria() -> None:
    criteria = SeriousnessCriteria(hospitalization=True, medically_important=True)
    assert criteria.ticked() == ["hospitalization", "medically_important"]


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        ae(severity="high")


def test_deterministic_id_is_stable_and_separates_parts() -> None:
    first = deterministic_id("inbound", "edc", "42")
    assert first == deterministic_id("inbound", "edc", "42")
    assert first != deterministic_id("inbound", "edc", "43")
    assert deterministic_id("a", "bc") != deterministic_id("ab", "c")


def test_deterministic_id_does_not_change_between_releases() -> None:
    # A changed namespace or separator would break dedupe of everything replayed after an upgrade.
    assert deterministic_id("inbound", "edc", "42") == "e2e0a56b-7750-5776-8273-4e62c1034f4a"
    assert deterministic_id("signal", "x") == "7cbbe91a-f896-5897-965a-c9032a3b8b08"


def test_message_key_is_trial_colon_subject() -> None:
    assert message_key("NCT07212335", "S-001") == b"NCT07212335:S-001"


def test_clinical_envelope_round_trips_through_json(make_ae: Any) -> None:
    envelope = make_ae(awareness_at=datetime(2026, 3, 1, 7, 0, tzinfo=UTC))
    parsed = CLINICAL_ADAPTER.validate_json(envelope.model_dump_json())
    assert isinstance(parsed, AeReported)
    assert parsed == envelope


def test_signal_envelope_round_trips_through_json(make_sae: Any) -> None:
    signal = make_sae()
    parsed = SIGNAL_ADAPTER.validate_json(signal.model_dump_json())
    assert isinstance(parsed, SaeDetected)
    assert parsed == signal


def test_envelope_with_unknown_type_is_refused(make_ae: Any) -> None:
    document = json.loads(make_ae().model_dump_json())
    document["type"] = "ae.deleted"
    with pytest.raises(ValidationError):
        CLINICAL_ADAPTER.validate_python(document)
