"""The safety hook for issue 13: deviations judged on stored data, signalled once, re-judged when data arrives late."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from shared.events import (
    DoseAdministered,
    DoseData,
    EnrollmentData,
    LabData,
    LabResulted,
    ProductRelease,
    ProtocolDeviation,
    ScreeningHistory,
    SubjectEnrolled,
)
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, _common, of_type, status

DOSE_AT = datetime(2026, 3, 2, 10, tzinfo=UTC)
SCREEN_AT = DOSE_AT - timedelta(days=2)
HISTORY = [
    ScreeningHistory(code=code, answer=False) for code in ("anti_tumour_therapy", "live_vaccine", "severe_infection")
]
PANEL = {
    "NEUT": ("0.6", "10^9/L", None),
    "CREAT": ("80", "umol/L", "100"),
    "ALT": ("35", "U/L", "40"),
    "AST": ("30", "U/L", "40"),
    "BILI": ("12", "umol/L", "21"),
    "QTCF": ("430", "ms", None),
    "HBA1C": ("5.6", "%", None),
}


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def enrolment(subject: str, arm: str = "A", **extra: Any) -> SubjectEnrolled:
    data = EnrollmentData(
        arm=arm, enrolled_at=date(2026, 2, 27), car_t_infused_on=date(2026, 1, 20), history=HISTORY, **extra
    )
    return SubjectEnrolled(**_common("NCT07212335", subject, "enrol"), data=data)


def screening(subject: str, test: str, value: str | None = None) -> LabResulted:
    default, unit, uln = PANEL[test]
    data = LabData.model_validate(
        {
            "result_id": f"SCR-{test}",
            "test": test,
            "value": value or default,
            "unit": unit,
            "uln": uln,
            "collected_at": SCREEN_AT,
            "baseline": True,
        }
    )
    return LabResulted(**_common("NCT07212335", subject, f"lab-{test}-{value}"), data=data)


def infusion(subject: str, number: int = 1, at: datetime = DOSE_AT, **extra: Any) -> DoseAdministered:
    data = DoseData(dose_id=f"D-{number}", number=number, administered_at=at, cells_per_kg=Decimal(2000000), **extra)
    return DoseAdministered(**_common("NCT07212335", subject, f"dose-{number}-{at}"), data=data)


def deviations(signals: list[Any]) -> list[tuple[str, bool, list[str]]]:
    found: list[ProtocolDeviation] = of_type(signals, "protocol.deviation")
    return [(d.data.kind, d.data.pages, d.data.notify_roles) for d in found]


OFFICER_AND_PI = ["safety_officer", "principal_investigator"]


def test_an_eligible_subject_raises_nothing_and_a_screened_subject_never_dosed_neither(driver: Driver) -> None:
    driver.apply_all([enrolment("S-1"), *(screening("S-1", t) for t in PANEL)])
    assert deviations(driver.apply(infusion("S-1"))) == []
    # S-2 is screened with an ALT of 5 x ULN but never dosed: no deviation, whatever the labs say
    assert deviations(driver.apply_all([enrolment("S-2"), screening("S-2", "ALT", "200")])) == []


def test_dosed_while_ineligible_pages_the_officer_and_the_pi_once(driver: Driver) -> None:
    driver.apply_all([enrolment("S-1"), *(screening("S-1", t) for t in PANEL if t != "ALT")])
    driver.apply(screening("S-1", "ALT", "120"))  # exactly 3 x ULN
    assert deviations(driver.apply(infusion("S-1"))) == [("dosed_while_ineligible", True, OFFICER_AND_PI)]
    # a later event of the same subject does not repeat it
    assert deviations(driver.apply(infusion("S-1", number=2, at=DOSE_AT + timedelta(days=7)))) == [
        ("extra_infusion", True, OFFICER_AND_PI)
    ]


def test_screening_data_arriving_after_the_dose_is_judged_when_it_arrives(driver: Driver) -> None:
    driver.apply_all([enrolment("S-1"), *(screening("S-1", t) for t in PANEL if t not in ("QTCF", "HBA1C"))])
    assert deviations(driver.apply(infusion("S-1"))) == [("screening_data_missing", True, OFFICER_AND_PI)]
    assert deviations(driver.apply(screening("S-1", "HBA1C"))) == [], "one gap of two filled: still missing, no page"
    late = screening("S-1", "QTCF", "495")  # entered after the dose, collected before it
    assert deviations(driver.apply(late)) == [("dosed_while_ineligible", True, OFFICER_AND_PI)]


def test_a_retracted_dose_leaves_the_subject_undosed(driver: Driver) -> None:
    driver.apply_all([enrolment("S-1"), screening("S-1", "ALT", "200")])
    assert deviations(driver.apply(status("S-1", "dose", "D-1"))) == []
    assert deviations(driver.apply(infusion("S-1"))) == []  # taken back before it arrived: never judged


def test_dose_conformance_and_release_from_the_dose_record(driver: Driver) -> None:
    driver.apply_all([enrolment("S-1", arm="B", weight_kg=Decimal(70)), *(screening("S-1", t) for t in PANEL)])
    failed = ProductRelease(
        viability_percent=Decimal("84.9"), sterility=True, pathogens=True, purity=True, tumorigenicity=True
    )
    first = infusion("S-1", total_cells=Decimal("2e8"), lot="UC-1", release=failed)  # 2.86e6 cells/kg
    assert deviations(driver.apply(first)) == [
        ("dose_out_of_tolerance", True, OFFICER_AND_PI),
        ("lot_release_failed", True, OFFICER_AND_PI),
    ]
    late = infusion("S-1", number=2, at=DOSE_AT + timedelta(days=11))
    assert deviations(driver.apply(late)) == [("interval_out_of_window", False, OFFICER_AND_PI)]


def test_a_dated_history_event_is_stored_with_the_enrolment_and_judged_at_the_dose(driver: Driver) -> None:
    vaccine = [*HISTORY[:1], ScreeningHistory(code="live_vaccine", last_on=date(2026, 2, 20)), HISTORY[2]]
    enrolled = enrolment("S-1")
    enrolled = enrolled.model_copy(update={"data": enrolled.data.model_copy(update={"history": vaccine})})
    driver.apply_all([enrolled, *(screening("S-1", t) for t in PANEL)])
    [found] = of_type(driver.apply(infusion("S-1")), "protocol.deviation")
    assert found.data.kind == "dosed_while_ineligible"
    assert "live vaccine within 4 weeks: last on 2026-02-20, 10 days before the first infusion" in found.data.detail
