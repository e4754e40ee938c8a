"""Regression tests for defects a review found in safety (each fixed; the test shows what went wrong)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from services.safety.sae import assess_ae
from shared.events import AeData
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, ae, dose, enrol, lab, of_type, status, types

DAY1 = date(2026, 3, 2)
DURING = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def infused(driver: Driver, subject: str, arm: str = "A", day: date = DAY1, now: datetime = DURING) -> Any:
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=10)
    return driver.apply_all([enrol(subject, arm, day), dose(subject, at)], now=now)


def neut(result_id: str, value: str, *, at: datetime, baseline: bool = False) -> Any:
    return lab("A-1", result_id=result_id, test="NEUT", value=value, lln="2.0", collected_at=at, baseline=baseline)


# --- SAE clock ---------------------------------------------------------------------------------------


def test_sae_clock_starts_at_the_earliest_awareness_when_versions_arrive_out_of_order() -> None:
    aware_v1 = datetime(2026, 3, 1, 6, tzinfo=UTC)
    aware_v2 = datetime(2026, 3, 3, 6, tzinfo=UTC)
    v1 = AeData.model_validate(
        {
            "ae_id": "AE-1",
            "version": 1,
            "term": "Pneumonia",
            "grade": 3,
            "seriousness": {"hospitalization": True},
            "awareness_at": aware_v1.isoformat(),
        }
    )
    v2 = AeData.model_validate(
        {
            "ae_id": "AE-1",
            "version": 2,
            "term": "Pneumonia",
            "grade": 3,
            "seriousness": {"hospitalization": True},
            "awareness_at": aware_v2.isoformat(),
        }
    )
    first = assess_ae(None, v2, received_at=aware_v2)
    second = assess_ae(first.state, v1, received_at=aware_v2 + timedelta(hours=1))
    in_order = assess_ae(assess_ae(None, v1, received_at=aware_v1).state, v2, received_at=aware_v2)
    assert in_order.state.awareness_at == aware_v1
    assert second.state.awareness_at == aware_v1


# --- labs: out-of-order status and retracted results ------------------------------------------------


def test_a_baseline_lab_arriving_after_its_entered_in_error_status_is_not_used_as_baseline(driver: Driver) -> None:
    infused(driver, "A-1")
    driver.apply(status("A-1", "lab", "R-0"))  # the site retracts the baseline before we receive it
    driver.apply(neut("R-0", "0.3", at=datetime(2026, 2, 28, tzinfo=UTC), baseline=True))  # grade 4, retracted
    # In the other order (lab, then status) the retracted baseline is ignored: the same must hold here.
    neutropenia = ae("A-1", onset="2026-03-09", term="Neutrophil count decreased", grade=4)
    assert types(driver.apply(neutropenia)) == ["dlt.suspected", "cohort.decision"]
    later = types(driver.apply(neut("R-1", "0.3", at=datetime(2026, 3, 9, tzinfo=UTC))))
    assert later == ["lab.toxicity", "dlt.suspected"]  # and the lab alone is a suspected haematological DLT


def test_a_retracted_lab_does_not_silence_the_next_real_result(driver: Driver) -> None:
    infused(driver, "A-1")
    first = types(driver.apply(neut("R-1", "0.3", at=datetime(2026, 3, 5, tzinfo=UTC))))
    assert first == ["lab.toxicity", "dlt.suspected", "cohort.decision"]  # a lab-only haematological suspicion
    driver.apply(status("A-1", "lab", "R-1"))  # that result was another patient's: entered in error
    out = driver.apply(neut("R-2", "0.4", at=datetime(2026, 3, 9, tzinfo=UTC)))  # the subject's real grade 4
    assert types(out)[:1] == ["lab.toxicity"]


def test_a_lab_arriving_after_its_entered_in_error_status_does_not_page(driver: Driver) -> None:
    infused(driver, "A-1")
    driver.apply(status("A-1", "lab", "R-1"))
    assert driver.apply(neut("R-1", "0.3", at=datetime(2026, 3, 9, tzinfo=UTC))) == []


def test_a_corrected_infusion_time_moves_the_dlt_window(driver: Driver) -> None:
    from shared.events import DoseAdministered, DoseData, deterministic_id

    driver.apply(enrol("A-1", "A", DAY1))
    typo = dose("A-1", datetime(2026, 2, 1, 10, tzinfo=UTC))  # the site typed February
    driver.apply(typo)
    assert driver.apply(ae("A-1", onset="2026-03-10", relatedness="possible")) == [], "day 38 of the wrong window"
    fixed_at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    correction = DoseAdministered.model_validate(
        {
            **typo.model_dump(),
            "id": deterministic_id("inbound", "edc", "dose-1-corrected"),
            "senderid": "dose-1-corrected",
            "data": DoseData(dose_id=typo.data.dose_id, number=1, administered_at=fixed_at),
        }
    )
    assert types(driver.apply(correction)) == ["dlt.suspected", "cohort.decision"]


def test_enrolment_anchored_window_does_not_close_before_its_last_day_ends_at_the_site() -> None:
    from datetime import timezone

    from services.safety.dlt_window import enrolment_window, place_onset

    window = enrolment_window(enrolled_on=date(2026, 3, 2), days=21)
    site = timezone(timedelta(hours=-5))
    evening_of_day_21 = datetime(2026, 3, 22, 20, 0, tzinfo=site)
    assert window.study_day(evening_of_day_21.date()) == 21
    assert place_onset(window, "2026-03-22").inside
    assert not window.closed(evening_of_day_21), "subject counted evaluable while still on study day 21"


def test_the_enrolment_deviation_check_gives_the_same_answer_on_a_replay(
    driver: Driver, protocol: Protocol, tmp_path: Any
) -> None:
    from shared.db import make_engine

    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")  # windows close 2026-03-30 10:00 UTC
    enrolment = enrol("B-1", "B", date(2026, 3, 30))
    live = driver.apply(enrolment, now=datetime(2026, 3, 30, 9, 0, tzinfo=UTC))  # arm A not yet cleared
    assert types(live) == ["protocol.deviation"]

    other = make_engine(f"sqlite:///{tmp_path}/replay.db")
    try:
        replay = Driver(other, protocol)
        for subject in ("A-1", "A-2", "A-3"):
            infused(replay, subject, "A")
        later = replay.apply(enrolment, now=datetime(2026, 9, 1, tzinfo=UTC))
        deviations = [(s.id, s.data.kind) for s in of_type(later, "protocol.deviation")]
        assert deviations == [(s.id, s.data.kind) for s in of_type(live, "protocol.deviation")]
    finally:
        other.dispose()
