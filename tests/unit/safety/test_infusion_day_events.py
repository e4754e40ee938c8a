"""Infusion day through safety's service layer with the shipped NCT07212335 protocol: vitals findings signalled
as lab toxicities, the sweep's monitoring-gap flag, the acute-reaction window (both arrival orders), the AE
review record completing a delayed-reaction visit, and the subject API showing them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from services.safety.assessments import ReviewMark, missing_kinds, schedule
from services.safety.dlt_window import StudyCalendar
from services.safety.models import AcuteReactionRow
from services.safety.sweep import run_sweep
from shared.events import AcuteReactionDetected, AssessmentMissed, LabToxicity
from shared.protocol import Assessment, Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, ae, ae_review, dose, enrol, of_type, status, vitals

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    d = Driver(engine, protocol)
    d.apply_all([enrol("A-1", "A", date(2026, 3, 2)), dose("A-1", START)])
    return d


def test_a_fever_during_the_infusion_is_signalled_once_then_when_worse(driver: Driver) -> None:
    first = driver.apply(vitals("A-1", START + timedelta(minutes=30), temperature_c="38.0", systolic_bp="118"))
    [signal] = of_type(first, "lab.toxicity")
    assert isinstance(signal, LabToxicity)
    assert (signal.data.term, signal.data.grade, signal.data.test, signal.data.value) == ("Fever", 1, "TEMP", "38.0")
    assert signal.data.reason.startswith("vital signs: 38.0 C is 38.0 - 39.0 C") and signal.data.measured_by == "vitals"
    assert driver.apply(vitals("A-1", START + timedelta(minutes=45), temperature_c="38.4")) == []
    [worse] = of_type(driver.apply(vitals("A-1", START + timedelta(minutes=60), temperature_c="39.2")), "lab.toxicity")
    assert (worse.data.grade, worse.data.previous_grade) == (2, 1)


def test_a_re_sent_reading_signals_nothing_and_a_low_pressure_is_flagged_for_clinical_grading(driver: Driver) -> None:
    reading = vitals("A-1", START, vitals_id="VS-1", systolic_bp="84", diastolic_bp="50")
    [low] = of_type(driver.apply(reading), "lab.toxicity")
    assert (low.data.term, low.data.grade, low.data.floor) == ("Hypotension", 1, True)
    assert "grade it clinically" in low.data.reason
    assert driver.apply(reading) == []


def test_the_sweep_flags_missing_monitoring_slots_once_after_the_grace(driver: Driver) -> None:
    for minutes in range(0, 181, 15):
        if minutes != 90:
            signs = {"temperature_c": "36.9", "systolic_bp": "120", "diastolic_bp": "75", "heart_rate": "80"}
            driver.apply(vitals("A-1", START + timedelta(minutes=minutes), respiratory_rate="16", spo2="98", **signs))
    end = START + timedelta(hours=3, minutes=5)
    before = run_sweep(driver.engine, protocol=driver.protocol, now=end + timedelta(hours=23), signals_topic=SIGNALS)
    assert [
        o for o in before if isinstance(o.envelope, AssessmentMissed) and o.envelope.data.category == "visit"
    ] == [], "the data-entry grace runs"
    after = run_sweep(driver.engine, protocol=driver.protocol, now=end + timedelta(hours=24), signals_topic=SIGNALS)
    [flag] = [
        o.envelope for o in after if isinstance(o.envelope, AssessmentMissed) and o.envelope.data.category == "visit"
    ]
    assert flag.data.assessment == "infusion 1 vital signs"
    assert flag.data.missing == [
        "2026-03-02 10:30 UTC: no temperature, systolic BP, diastolic BP, heart rate, respiratory rate, SpO2"
    ]
    again = run_sweep(driver.engine, protocol=driver.protocol, now=end + timedelta(hours=25), signals_topic=SIGNALS)
    assert [o for o in again if isinstance(o.envelope, AssessmentMissed) and o.envelope.data.category == "visit"] == []


def test_complete_monitoring_is_not_flagged(driver: Driver) -> None:
    for minutes in range(0, 181, 15):
        signs = {"temperature_c": "36.9", "systolic_bp": "120", "diastolic_bp": "75", "heart_rate": "80"}
        driver.apply(vitals("A-1", START + timedelta(minutes=minutes), respiratory_rate="16", spo2="98", **signs))
    out = run_sweep(driver.engine, protocol=driver.protocol, now=START + timedelta(days=2), signals_topic=SIGNALS)
    assert [o for o in out if isinstance(o.envelope, AssessmentMissed) and o.envelope.data.category == "visit"] == []


def test_an_ae_with_onset_within_24_hours_is_an_acute_reaction_and_a_worse_grade_signals_again(driver: Driver) -> None:
    onset = START + timedelta(hours=24)  # exactly 24 h after the start: still acute
    out = driver.apply(ae("A-1", term="Chills", grade=2, relatedness="possible", onset_at=onset.isoformat()))
    [signal] = of_type(out, "acute_reaction.detected")
    assert isinstance(signal, AcuteReactionDetected)
    data = signal.data
    assert (data.grade, data.dose_number, data.onset_precision, data.dlt_grade) == (2, 1, "time", False)
    assert str(data.hours_after_infusion) == "24.0"
    assert (
        of_type(
            driver.apply(ae("A-1", version=2, term="Chills", grade=2, onset_at=onset.isoformat())),
            "acute_reaction.detected",
        )
        == []
    )
    worse = of_type(
        driver.apply(ae("A-1", version=3, term="Chills", grade=3, onset_at=onset.isoformat())),
        "acute_reaction.detected",
    )
    assert [(s.data.grade, s.data.previous_grade, s.data.dlt_grade) for s in worse] == [(3, 2, True)]
    with Session(driver.engine) as session:
        row = session.get(AcuteReactionRow, ("NCT07212335", "A-1", "AE-1"))
        assert row is not None and (row.grade, row.ae_version) == (3, 3)


def test_an_ae_after_the_window_or_below_grade_2_is_not_acute(driver: Driver) -> None:
    late = (START + timedelta(hours=24, minutes=1)).isoformat()
    assert of_type(driver.apply(ae("A-1", term="Chills", grade=3, onset_at=late)), "acute_reaction.detected") == []
    early = (START + timedelta(hours=2)).isoformat()
    grade_1 = ae("A-1", ae_id="AE-2", term="Chills", grade=1, onset_at=early)
    assert of_type(driver.apply(grade_1), "acute_reaction.detected") == []


def test_an_ae_reported_before_its_infusion_record_is_matched_when_the_dose_arrives(
    engine: Engine, protocol: Protocol
) -> None:
    driver = Driver(engine, protocol)
    driver.apply(enrol("B-1", "B", date(2026, 3, 2)))
    onset = (START + timedelta(hours=6)).isoformat()
    assert of_type(driver.apply(ae("B-1", term="Fever", grade=2, onset_at=onset)), "acute_reaction.detected") == []
    [signal] = of_type(driver.apply(dose("B-1", START)), "acute_reaction.detected")
    assert signal.data.ae_id == "AE-1" and signal.data.hours_after_infusion is not None


def test_an_ae_review_record_completes_the_visits_ae_part_and_a_lab_does_not() -> None:
    calendar = StudyCalendar(date(2026, 3, 2), 0, timedelta(0))
    [visit] = schedule([Assessment(name="week 8", day=56, window_days=3, kinds=["lab", "ae"])], calendar=calendar)
    inside = datetime(2026, 4, 27, 9, tzinfo=UTC)
    strict = ("ae_review",)
    assert missing_kinds(visit, lab_times=[inside], ae_times=[inside], evidence=strict) == ["ae"]
    review = ReviewMark(inside)
    assert missing_kinds(visit, lab_times=[inside], ae_times=[], reviews=[review], evidence=strict) == []
    named_late = ReviewMark(inside + timedelta(days=30), visit="Week 8")
    assert missing_kinds(visit, lab_times=[inside], ae_times=[], reviews=[named_late], evidence=strict) == []
    other_visit = ReviewMark(inside, visit="week 4")
    assert missing_kinds(visit, lab_times=[inside], ae_times=[], reviews=[other_visit], evidence=strict) == ["ae"]
    reports = ("ae_review", "ae_report")
    assert missing_kinds(visit, lab_times=[inside], ae_times=[inside], evidence=reports) == []
    assert missing_kinds(visit, lab_times=[inside], ae_times=[], evidence=reports) == ["ae"]
    assert missing_kinds(visit, lab_times=[inside], ae_times=[]) == [], "the default keeps the old reading"


def test_the_sweep_flags_week_4_without_an_ae_review_and_not_with_one(driver: Driver) -> None:
    driver.apply(ae_review("A-1", datetime(2026, 3, 30, 9, tzinfo=UTC), visit="week 4"))
    driver.apply(enrol("A-2", "A", date(2026, 3, 2)))
    driver.apply(dose("A-2", START))
    out = run_sweep(
        driver.engine, protocol=driver.protocol, now=datetime(2026, 4, 3, tzinfo=UTC), signals_topic=SIGNALS
    )
    week4 = {
        o.envelope.subject: o.envelope.data.missing
        for o in out
        if isinstance(o.envelope, AssessmentMissed) and o.envelope.data.assessment == "week 4"
    }
    assert week4 == {"A-1": ["lab"], "A-2": ["lab", "ae"]}


def test_a_reading_taken_back_no_longer_masks_the_next_one(driver: Driver) -> None:
    first = vitals("A-1", START + timedelta(minutes=15), vitals_id="VS-15", temperature_c="38.2")
    assert len(of_type(driver.apply(first), "lab.toxicity")) == 1
    driver.apply(status("A-1", "vitals", "VS-15"))  # entered in error: another subject's thermometer
    again = vitals("A-1", START + timedelta(minutes=30), vitals_id="VS-30", temperature_c="38.1")
    [signal] = of_type(driver.apply(again), "lab.toxicity")
    assert (signal.data.result_id, signal.data.previous_grade) == ("VS-30", None)
