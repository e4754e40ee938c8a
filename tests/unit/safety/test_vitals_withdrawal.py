"""A vital-sign finding the site corrects or takes back is withdrawn as a lab finding is (`lab.toxicity_withdrawn`,
naming the vitals set): before, a fever corrected to 37.2 C kept its review open and escalating. A restored set is
news again; a set whose retraction came first is stored and never signalled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.events import EnvelopeBase, VitalsRecorded
from tests.unit.safety.clinical import Driver, of_type, status, vitals
from tests.unit.safety.test_infusion_day_events import START
from tests.unit.safety.test_infusion_day_events import driver as driver  # the fixture: A-1 infused at START


def temperature(vitals_id: str, value: str, minutes: int, *, sender: str | None = None) -> VitalsRecorded:
    envelope = vitals("A-1", START + timedelta(minutes=minutes), vitals_id=vitals_id, temperature_c=value)
    return envelope if sender is None else envelope.model_copy(update={"id": f"{envelope.id}-{sender}"})


def withdrawals(signals: list[EnvelopeBase]) -> list[Any]:
    return of_type(signals, "lab.toxicity_withdrawn")


def test_a_fever_corrected_to_normal_is_withdrawn(driver: Driver) -> None:
    [fever] = of_type(driver.apply(temperature("VS-1", "39.2", 30)), "lab.toxicity")
    correction = temperature("VS-1", "37.2", 30, sender="corrected")
    out = driver.apply(correction)
    [signal] = withdrawals(out)
    data = signal.data
    assert (data.term, data.withdrawn_grade, data.standing_grade, data.withdrawn_result_id) == (
        "Fever",
        2,
        None,
        "VS-1",
    )
    assert data.why == "vitals set VS-1 corrected by the site: temperature 39.2 C -> 37.2 C"
    assert (data.source_event_id, data.sequence, data.received_at) == (correction.id, 0, correction.receivedat)
    assert of_type(out, "lab.toxicity") == [] and fever.data.result_id == "VS-1"


def test_a_fever_corrected_to_a_lower_grade_says_the_grade_that_stands(driver: Driver) -> None:
    driver.apply(temperature("VS-1", "40.5", 30))
    out = driver.apply(temperature("VS-1", "39.5", 30, sender="corrected"))
    assert of_type(out, "lab.toxicity") == [], "no page for a better temperature: the withdrawal says what stands"
    [signal] = withdrawals(out)
    data = signal.data
    assert (data.withdrawn_grade, data.standing_grade, data.standing_result_id) == (3, 2, "VS-1")
    assert data.standing_result is not None and (data.standing_result.value, data.standing_result.unit) == ("39.5", "C")


def test_the_worse_of_two_readings_corrected_leaves_the_other_standing(driver: Driver) -> None:
    driver.apply(temperature("VS-1", "39.2", 30))
    driver.apply(temperature("VS-2", "40.5", 45))
    [signal] = withdrawals(driver.apply(temperature("VS-2", "37.0", 45, sender="corrected")))
    assert (signal.data.withdrawn_grade, signal.data.standing_grade, signal.data.standing_result_id) == (3, 2, "VS-1")


def test_a_value_corrected_within_its_grade_revises_what_is_shown(driver: Driver) -> None:
    """39.2 C re-entered as 39.5 C: the same grade 2 fever, already paged; it pages nobody (before, it paged again),
    but the alert must show the temperature that stands (a lab result corrected within its grade is revised alike)."""
    driver.apply(temperature("VS-1", "39.2", 30))
    out = driver.apply(temperature("VS-1", "39.5", 30, sender="corrected"))
    assert of_type(out, "lab.toxicity") == []
    [signal] = withdrawals(out)
    data = signal.data
    assert (data.withdrawn_grade, data.standing_grade, data.withdrawn_result_id, data.standing_result_id) == (
        2,
        2,
        "VS-1",
        "VS-1",
    )
    assert data.standing_result is not None and data.standing_result.value == "39.5"


def test_a_correction_upwards_pages_and_withdraws_nothing(driver: Driver) -> None:
    driver.apply(temperature("VS-1", "38.4", 30))
    out = driver.apply(temperature("VS-1", "39.6", 30, sender="corrected"))
    assert withdrawals(out) == []
    assert [(s.data.term, s.data.grade) for s in of_type(out, "lab.toxicity")] == [("Fever", 2)]


def test_a_vitals_set_taken_back_withdraws_once_and_restored_pages_again(driver: Driver) -> None:
    driver.apply(temperature("VS-1", "39.2", 30))
    retraction = status("A-1", "vitals", "VS-1")
    [signal] = withdrawals(driver.apply(retraction))
    assert (signal.data.withdrawn_grade, signal.data.standing_grade) == (2, None)
    assert signal.data.why == "vitals set VS-1 marked entered in error by the site"
    again = retraction.model_copy(update={"id": f"{retraction.id}-again"})
    assert driver.apply(again) == [], "a retraction re-sent withdraws nothing more"
    [page] = of_type(driver.apply(status("A-1", "vitals", "VS-1", "restored")), "lab.toxicity")
    assert (page.data.term, page.data.grade, page.data.result_id) == ("Fever", 2, "VS-1")


def test_a_vitals_set_whose_retraction_came_first_is_stored_and_never_signalled(driver: Driver) -> None:
    """Before, it raised StopIteration out of the consumer."""
    assert withdrawals(driver.apply(status("A-1", "vitals", "VS-1"))) == []
    assert driver.apply(temperature("VS-1", "39.2", 30)) == []
    assert driver.apply(temperature("VS-1", "40.5", 30, sender="corrected")) == []
    [page] = of_type(driver.apply(status("A-1", "vitals", "VS-1", "restored")), "lab.toxicity")
    assert (page.data.grade, page.data.value) == (3, "40.5")


# --- the readings graded with a changed set ---------------------------------------------------------------------


def test_the_start_of_a_run_taken_back_withdraws_the_grade_4_naming_the_later_reading(driver: Driver) -> None:
    """40.5 C, then 40.3 C 25 h later (grade 4: above 40.0 C for 25 h). The first set was another patient's: the
    later reading's grade 4 is withdrawn naming it (the finding that paged), grade 3 standing from it."""
    driver.apply(temperature("VS-1", "40.5", 60))
    [grade_4] = of_type(driver.apply(temperature("VS-2", "40.3", 26 * 60)), "lab.toxicity")
    assert grade_4.data.grade == 4
    retraction = status("A-1", "vitals", "VS-1")
    out = driver.apply(retraction)
    assert of_type(out, "lab.toxicity") == []
    own, regraded = withdrawals(out)
    assert (own.data.withdrawn_result_id, own.data.withdrawn_grade, own.data.standing_grade) == ("VS-1", 3, None)
    data = regraded.data
    assert (data.withdrawn_result_id, data.withdrawn_grade, data.standing_grade, data.standing_result_id) == (
        "VS-2",
        4,
        3,
        "VS-2",
    )
    assert data.standing_result is not None and "for 0.0 h so far" in data.standing_result.reason
    assert data.why == (
        "vitals set VS-1 marked entered in error by the site; "
        "vitals set VS-2 (2026-03-03 11:00 UTC) graded again with it"
    )
    assert len({own.id, regraded.id}) == 2 and data.source_event_id == retraction.id


def test_a_restored_start_of_a_run_pages_grade_4_from_the_later_reading(driver: Driver) -> None:
    driver.apply(temperature("VS-1", "40.5", 60))
    driver.apply(temperature("VS-2", "40.3", 26 * 60))
    driver.apply(status("A-1", "vitals", "VS-1"))
    restored = status("A-1", "vitals", "VS-1", "restored")
    out = driver.apply(restored)
    assert withdrawals(out) == []
    [page] = of_type(out, "lab.toxicity")
    data = page.data
    assert (data.result_id, data.grade, data.previous_grade, data.received_at) == ("VS-2", 4, 3, restored.receivedat)
    assert data.reason.endswith("(graded again: vitals set VS-1 marked restored by the site)")
    assert "above 40.0 C for 25.0 h" in data.reason


def test_a_backfilled_normal_reading_inside_a_run_withdraws_the_grade_4(driver: Driver) -> None:
    """The 22:00 chart page arrives late: 39.8 C between two readings above 40.0 C. The run restarted there."""
    driver.apply(temperature("VS-1", "40.5", 60))
    driver.apply(temperature("VS-2", "40.3", 26 * 60))
    out = driver.apply(temperature("VS-M", "39.8", 13 * 60))
    assert of_type(out, "lab.toxicity") == []
    [signal] = withdrawals(out)
    assert (signal.data.withdrawn_result_id, signal.data.withdrawn_grade, signal.data.standing_grade) == ("VS-2", 4, 3)
    assert signal.data.why.startswith("vitals set VS-M (2026-03-02 22:00 UTC) recorded by the site; vitals set VS-2")


def test_a_set_measured_on_another_day_within_its_grade_is_withdrawn_with_itself_standing(driver: Driver) -> None:
    driver.apply(temperature("VS-1", "39.4", 60))
    [signal] = withdrawals(driver.apply(temperature("VS-1", "39.4", 3 * 24 * 60 + 60, sender="date")))
    data = signal.data
    assert (data.withdrawn_grade, data.standing_grade, data.standing_result_id) == (2, 2, "VS-1")
    assert data.standing_result is not None and data.standing_result.collected_at == START + timedelta(days=3, hours=1)
    assert "measured at 2026-03-02 10:00 -> 2026-03-05 10:00 UTC" in data.why
