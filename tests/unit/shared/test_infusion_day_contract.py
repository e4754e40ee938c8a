"""The canonical contract for infusion day: AE onset with a time, vitals, AE review records; and the protocol
sections for vitals, the acute window and AE evidence, each error with its path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.events import INBOUND_DATA, AeData, AeReviewData, InboundType, VitalsData
from shared.protocol import ProtocolError, load_protocol, parse_protocol

PROTOCOLS = Path(__file__).resolve().parents[3] / "shared" / "protocols"


def ae(**fields: object) -> AeData:
    return AeData.model_validate({"ae_id": "AE-1", "version": 1, "term": "Chills", **fields})


def test_onset_at_gives_onset_its_date_at_the_senders_offset() -> None:
    late_evening = datetime(2026, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert ae(onset_at=late_evening.isoformat()).onset == "2026-03-02"  # 04:30 UTC on 03-03
    assert ae(onset="2026-03", onset_at=late_evening.isoformat()).onset == "2026-03"
    with pytest.raises(ValidationError, match="different days"):
        ae(onset="2026-03-03", onset_at=late_evening.isoformat())
    with pytest.raises(ValidationError):
        ae(onset_at="2026-03-02T10:00:00")  # no offset: not an instant


def test_a_time_written_into_onset_becomes_onset_at() -> None:
    data = ae(onset="2026-03-02T10:15:00+01:00")
    assert data.onset == "2026-03-02"
    assert data.onset_at == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def test_vitals_need_a_sign_exact_numbers_and_plausible_values() -> None:
    assert INBOUND_DATA[InboundType.VITALS] is VitalsData
    at = "2026-03-02T09:15:00Z"
    data = VitalsData.model_validate({"vitals_id": "V1", "measured_at": at, "temperature_c": "38.0"})
    assert data.temperature_c == Decimal("38.0") and data.measured() == ["temperature_c"]
    with pytest.raises(ValidationError, match="at least one"):
        VitalsData.model_validate({"vitals_id": "V1", "measured_at": at})
    with pytest.raises(ValidationError, match="binary floats"):
        VitalsData.model_validate({"vitals_id": "V1", "measured_at": at, "temperature_c": 38.1})
    with pytest.raises(ValidationError) as error:
        VitalsData.model_validate({"vitals_id": "V1", "measured_at": at, "temperature_c": "101.3"})  # Fahrenheit
    assert error.value.errors()[0]["loc"] == ("temperature_c",)


def test_an_ae_review_is_none_new_unless_said() -> None:
    review = AeReviewData.model_validate({"review_id": "R1", "assessed_at": "2026-03-30T10:00:00Z", "visit": "week 4"})
    assert review.new_aes is False and INBOUND_DATA[InboundType.AE_REVIEW] is AeReviewData


def test_both_shipped_protocols_carry_the_sections_with_different_values() -> None:
    trial = load_protocol(None)
    other = load_protocol(PROTOCOLS / "example-3plus3-dose-levels.yaml")
    assert trial.infusion_vitals is not None and other.infusion_vitals is not None
    assert trial.acute_reactions is not None and other.acute_reactions is not None
    assert (trial.infusion_vitals.interval_minutes, trial.infusion_vitals.observe_after_minutes) == (15, 120)
    assert (trial.acute_reactions.window_hours, trial.acute_reactions.min_grade) == (24, 2)
    assert trial.ae_assessment.evidence == ["ae_review"]
    assert other.acute_reactions.window_hours != 24 and other.ae_assessment.evidence != ["ae_review"]


def test_protocol_errors_name_their_path() -> None:
    text = (PROTOCOLS / "nct07212335.yaml").read_text()
    broken = text.replace("  tolerance_minutes: 5\n", "  tolerance_minutes: 8\n").replace(
        "  notify_roles: [safety_officer, medical_monitor]\n\nsae:", "  notify_roles: [night_nurse]\n\nsae:"
    )
    with pytest.raises(ProtocolError) as error:
        parse_protocol(broken)
    problems = " | ".join(error.value.problems)
    assert "infusion_vitals" in problems and "half of interval_minutes" in problems
    bad_term = text.replace("{Fever: 1, Hypertension: 3, Hypotension: 1}", "{Fever: 1, Hypoxia: 2}")
    with pytest.raises(ProtocolError) as error:
        parse_protocol(bad_term)
    assert any(p.startswith("infusion_vitals.min_grade.Hypoxia") for p in error.value.problems)
    bad_evidence = text.replace("evidence: [ae_review]", "evidence: [phone_call]")
    with pytest.raises(ProtocolError) as error:
        parse_protocol(bad_evidence)
    assert any(p.startswith("ae_assessment.evidence.0") for p in error.value.problems)
    wrong_role = text.replace(
        "  date_only_onset: counts\n  review_hours: 24\n  notify_roles: [safety_officer, medical_monitor]",
        "  date_only_onset: counts\n  review_hours: 24\n  notify_roles: [night_nurse]",
    )
    with pytest.raises(ProtocolError, match=r"acute_reactions\.notify_roles names roles no contact has"):
        parse_protocol(wrong_role)
