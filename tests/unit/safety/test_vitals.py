"""Vital signs: CTCAE v5.0 Fever and Hypertension by measurement (with their boundaries), the protocol's
hypotension screen, which findings are news, and the infusion-day monitoring slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.safety.vitals import (
    Reading,
    check_due,
    correction_words,
    dependents,
    fever,
    gaps,
    hypertension,
    hypotension,
    judge_change,
    monitoring_incomplete,
    news,
    slots,
    withdrawals,
)
from shared.protocol import InfusionVitals, VitalSign

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = InfusionVitals(
    interval_minutes=15,
    infusion_minutes=60,
    observe_after_minutes=120,
    tolerance_minutes=5,
    required=["temperature_c", "systolic_bp"],
    min_grade={"Fever": 1, "Hypertension": 3, "Hypotension": 1},
    hypotension_systolic_below=Decimal(90),
)


def reading(at: datetime, vitals_id: str | None = None, **signs: str) -> Reading:
    values: dict[VitalSign, Decimal] = {name: Decimal(v) for name, v in signs.items()}  # type: ignore[misc]
    return Reading(vitals_id or at.isoformat(), at, values)


@pytest.mark.parametrize(
    ("temperature", "grade"),
    [
        ("37.9", None),
        ("37.99", None),
        ("38.0", 1),  # the lower bound of grade 1 is included
        ("39.0", 1),  # "38.0 - 39.0": 39.0 is still grade 1
        ("39.01", 2),  # "> 39.0 - 40.0"
        ("40.0", 2),
        ("40.01", 3),  # "> 40.0 for <= 24 h"
    ],
)
def test_fever_grades_by_temperature(temperature: str, grade: int | None) -> None:
    found = fever(reading(T0, temperature_c=temperature), [])
    assert (found.grade if found else None) == grade
    if found is not None:
        assert found.term == "Fever" and not found.floor and found.test == "TEMP"


def test_fever_above_40_for_more_than_24_hours_is_grade_4() -> None:
    history = [reading(T0 + timedelta(hours=h), temperature_c="40.5") for h in (0, 12)]
    exactly = reading(T0 + timedelta(hours=24), temperature_c="40.2")
    assert fever(exactly, history).grade == 3  # type: ignore[union-attr]  # "> 24 h": exactly 24 h is not
    later = reading(T0 + timedelta(hours=24, minutes=15), temperature_c="40.2")
    found = fever(later, [*history, exactly])
    assert found is not None and found.grade == 4 and "24.2 h" in found.reason


def test_a_reading_at_or_below_40_breaks_the_run() -> None:
    history = [
        reading(T0, temperature_c="40.5"),
        reading(T0 + timedelta(hours=10), temperature_c="39.5"),
        reading(T0 + timedelta(hours=12), temperature_c="40.5"),
    ]
    found = fever(reading(T0 + timedelta(hours=30), temperature_c="40.5"), history)
    assert found is not None and found.grade == 3  # above 40.0 since hour 12 only: 18 h


@pytest.mark.parametrize(
    ("systolic", "diastolic", "grade", "test"),
    [
        ("119", "79", None, None),
        ("120", "70", 1, "SYSBP"),
        ("139", "89", 1, "SYSBP"),
        ("130", "90", 2, "DIABP"),  # the worse of the two pressures decides
        ("140", "80", 2, "SYSBP"),
        ("159", "99", 2, "SYSBP"),
        ("160", "80", 3, "SYSBP"),
        ("150", "100", 3, "DIABP"),
    ],
)
def test_hypertension_by_pressure_is_always_a_floor(
    systolic: str, diastolic: str, grade: int | None, test: str
) -> None:
    found = hypertension(reading(T0, systolic_bp=systolic, diastolic_bp=diastolic))
    assert (found.grade if found else None) == grade
    if found is not None:
        assert found.floor and found.test == test and "investigator" in found.reason


def test_hypotension_is_only_the_protocols_screen() -> None:
    low = reading(T0, systolic_bp="89", diastolic_bp="50")
    found = hypotension(low, systolic_below=Decimal(90))
    assert found is not None and (found.term, found.grade, found.floor) == ("Hypotension", 1, True)
    assert "protocol's screen" in found.reason and "grades Hypotension by intervention only" in found.reason
    assert hypotension(reading(T0, systolic_bp="90"), systolic_below=Decimal(90)) is None  # below, not at
    assert hypotension(low, systolic_below=None) is None, "no screen: CTCAE states no pressure cut-off"


def test_a_fever_measured_every_15_minutes_pages_once_and_again_when_worse() -> None:
    first = reading(T0, "v1", temperature_c="38.2")
    assert [(f.grade, prev) for f, prev in news(first, [first], rules=RULES)] == [(1, None)]
    second = reading(T0 + timedelta(minutes=15), "v2", temperature_c="38.6")
    assert news(second, [first, second], rules=RULES) == []
    third = reading(T0 + timedelta(minutes=30), "v3", temperature_c="39.4")
    [(finding, previous)] = news(third, [first, second, third], rules=RULES)
    assert (finding.grade, previous) == (2, 1)


def test_findings_below_the_protocols_grade_are_not_signalled() -> None:
    grade_2_pressure = reading(T0, "v1", systolic_bp="150", diastolic_bp="85")
    assert news(grade_2_pressure, [grade_2_pressure], rules=RULES) == []  # Hypertension signals from grade 3
    no_fever_term = RULES.model_copy(update={"min_grade": {"Hypertension": 3}})
    hot = reading(T0, "v2", temperature_c="39.5")
    assert news(hot, [hot], rules=no_fever_term) == []


def withdrawn(
    before: Reading, after: Reading | None, history: list[Reading]
) -> list[tuple[str, int, str | None, int | None]]:
    """(term, grade withdrawn, set standing, its grade) for each finding the change withdraws."""
    return [
        (
            w.finding.term,
            w.finding.grade,
            *((w.standing[0].vitals_id, w.standing[1].grade) if w.standing else (None, None)),
        )
        for w in withdrawals(before, after, history, rules=RULES)
    ]


def test_a_fever_corrected_to_normal_or_taken_back_is_withdrawn_with_nothing_standing() -> None:
    typo, fixed = reading(T0, "v1", temperature_c="39.2"), reading(T0, "v1", temperature_c="37.2")
    assert withdrawn(typo, fixed, [fixed]) == [("Fever", 2, None, None)]
    assert withdrawn(typo, None, []) == [("Fever", 2, None, None)]


def test_a_fever_corrected_to_a_lower_grade_is_withdrawn_with_the_grade_the_set_still_gives() -> None:
    before, after = reading(T0, "v1", temperature_c="40.5"), reading(T0, "v1", temperature_c="39.5")
    assert withdrawn(before, after, [after]) == [("Fever", 3, "v1", 2)]
    within = reading(T0, "v1", temperature_c="39.8")
    assert withdrawn(after, within, [within]) == [("Fever", 2, "v1", 2)], "grade 2 stands, at a value to show"
    resent = reading(T0, "v1", temperature_c="39.50")
    assert withdrawn(after, resent, [resent]) == [], "the same temperature written another way: nothing to show"


def test_a_correction_next_to_a_worse_or_equal_reading() -> None:
    """A worse reading nearby paged, not this set: nothing to withdraw. An equal one stands in its place (the alert
    must show a reading that stands). One further away than `repeat_after_hours` is another episode."""
    before, after = reading(T0, "v1", temperature_c="39.2"), reading(T0, "v1", temperature_c="37.0")
    worse = reading(T0 + timedelta(minutes=15), "v2", temperature_c="40.4")
    assert withdrawn(before, after, [after, worse]) == []
    equal = reading(T0 + timedelta(minutes=15), "v2", temperature_c="39.6")
    assert withdrawn(before, after, [after, equal]) == [("Fever", 2, "v2", 2)]
    lower = reading(T0 + timedelta(minutes=15), "v2", temperature_c="38.4")
    assert withdrawn(before, after, [after, lower]) == [("Fever", 2, "v2", 1)]
    later = reading(T0 + timedelta(hours=25), "v3", temperature_c="39.6")
    assert withdrawn(before, after, [after, later]) == [("Fever", 2, None, None)]


def test_a_correction_is_news_only_where_worse_than_the_set_was() -> None:
    before = reading(T0, "v1", temperature_c="39.2")
    within, lower, worse = (reading(T0, "v1", temperature_c=t) for t in ("39.6", "38.5", "40.3"))
    assert news(within, [within], rules=RULES, before=before) == []
    assert news(lower, [lower], rules=RULES, before=before) == []
    assert [(f.grade, prev) for f, prev in news(worse, [worse], rules=RULES, before=before)] == [(3, None)]


def test_findings_below_the_protocols_grade_are_never_withdrawn() -> None:
    before = reading(T0, "v1", systolic_bp="150", diastolic_bp="85")  # Hypertension grade 2: not signalled
    after = reading(T0, "v1", systolic_bp="118", diastolic_bp="75")
    assert withdrawn(before, after, [after]) == []
    high = reading(T0, "v1", systolic_bp="172", diastolic_bp="85")  # grade 3 (at least)
    assert withdrawn(high, after, [after]) == [("Hypertension", 3, None, None)]


def test_a_set_measured_at_another_time_within_its_grade_is_withdrawn_with_itself_standing() -> None:
    """Keyed on the infusion day, measured on day 3: the same grade, shown with the time it was measured."""
    before, after = reading(T0, "v1", temperature_c="39.4"), reading(T0 + timedelta(days=3), "v1", temperature_c="39.4")
    assert withdrawn(before, after, [after]) == [("Fever", 2, "v1", 2)]
    [change] = withdrawals(before, after, [after], rules=RULES)
    assert change.standing is not None and change.standing[0].measured_at == T0 + timedelta(days=3)


# --- a change graded with the readings that depend on it ----------------------------------------------------------


def hot(hours: float, vitals_id: str, value: str) -> Reading:
    return reading(T0 + timedelta(hours=hours), vitals_id, temperature_c=value)


def judged(vitals_id: str, before: list[Reading], after: list[Reading]) -> tuple[list[tuple], list[tuple]]:
    """(set named, grade withdrawn, set standing, its grade) per withdrawal; (set, grade, previous) per news."""
    found = judge_change(vitals_id, before, after, rules=RULES)
    gone = [
        (taken.vitals_id, w.finding.grade, *((w.standing[0].vitals_id, w.standing[1].grade) if w.standing else (None,)))
        for taken, w in found.withdrawn
    ]
    return gone, [(n.reading.vitals_id, n.finding.grade, n.previous) for n in found.news]


def test_the_readings_graded_with_a_set_are_the_run_above_40_after_it() -> None:
    run = [hot(1, "a", "40.5"), hot(20, "b", "40.2"), hot(30, "c", "40.1"), hot(31, "d", "39.9"), hot(40, "e", "41")]
    pressure = reading(T0 + timedelta(hours=2), "p", systolic_bp="120")  # no temperature: neither in it nor a break
    assert [r.vitals_id for r in dependents([hot(0, "x", "40.5")], [*run, pressure])] == ["a", "b", "c"]
    assert [r.vitals_id for r in dependents([hot(30, "x", "37")], run)] == [], "at or below 40.0 C: the run ends"
    moved = [hot(0, "x", "40.5"), hot(32, "x", "40.5")]  # a correction of its time: both places count
    assert [r.vitals_id for r in dependents(moved, run)] == ["a", "b", "c", "e"]
    assert dependents([hot(1, "x", "40.5")], run)[0].vitals_id == "b", "measured at the same time: not after it"


def test_a_normal_reading_taken_back_inside_a_run_pages_the_grade_4_it_hid() -> None:
    first, normal, later = hot(1, "v1", "40.5"), hot(13, "vm", "39.8"), hot(26, "v2", "40.3")
    gone, news_ = judged("vm", [first, normal, later], [first, later])
    assert gone == [], "the 39.8 C grade 2 is not withdrawn: worse stands near it"
    assert news_ == [("v2", 4, 3)], "grade 4 read from the later reading, which stood at grade 3"


def test_a_correction_upwards_pages_once_with_the_worst_grade_it_makes() -> None:
    """The set's own grade 3 and the later reading's grade 4 both follow: one page, grade 4."""
    early, late = hot(1, "v1", "37.5"), hot(26, "v2", "40.3")
    fixed = hot(1, "v1", "40.5")
    assert judged("v1", [early, late], [fixed, late]) == ([], [("v2", 4, 3)])


def test_the_start_of_a_run_taken_back_withdraws_the_grade_4_from_the_reading_that_gave_it() -> None:
    first, later = hot(1, "v1", "40.5"), hot(26, "v2", "40.3")
    gone, news_ = judged("v1", [first, later], [later])
    assert gone == [("v1", 3, None), ("v2", 4, "v2", 3)], "the later reading is named: it is the one that paged"
    assert news_ == []


def test_a_run_graded_again_withdraws_from_every_reading_and_pages_once() -> None:
    """Every reading of a long run that changes grade is named (which of them paged depends on the order they came
    in); a grade 4 the change makes pages once, from the latest reading."""
    run = [hot(h, f"r{h}", "40.4") for h in (26, 28, 30)]
    start = hot(1, "v1", "40.5")
    gone, _ = judged("v1", [start, *run], run)
    assert [(named, grade, standing) for named, grade, standing, _ in gone[1:]] == [
        ("r26", 4, "r26"),
        ("r28", 4, "r28"),
        ("r30", 4, "r30"),
    ]
    assert judged("v1", run, [start, *run])[1] == [("r30", 4, 3)], "restored: one page for the grade 4"


def test_a_normal_reading_backfilled_inside_a_run_withdraws_its_grade_4() -> None:
    first, later = hot(1, "v1", "40.5"), hot(26, "v2", "40.3")
    normal = hot(13, "vm", "39.8")
    assert judged("vm", [first, later], [first, normal, later]) == ([("v2", 4, "v2", 3)], [])


def test_a_grade_4_that_stands_by_a_longer_run_is_left_alone() -> None:
    """Another reading still starts the run more than 24 h before: the later reading's grade 4 is not touched (the
    set's own grade 3 is withdrawn with the one next to it standing, as before)."""
    earliest, first, later = hot(0, "v0", "40.2"), hot(1, "v1", "40.5"), hot(26, "v2", "40.3")
    assert judged("v1", [earliest, first, later], [earliest, later]) == ([("v1", 3, "v0", 3)], [])


def test_a_correction_is_worded_sign_by_sign() -> None:
    before = reading(T0, "VS-1", temperature_c="39.2", systolic_bp="120")
    after = reading(T0 + timedelta(minutes=15), "VS-1", temperature_c="37.2", heart_rate="80")
    assert correction_words(before, after) == (
        "vitals set VS-1 corrected by the site: temperature 39.2 C -> 37.2 C, systolic BP 120 mm Hg -> none, "
        "heart rate none -> 80 /min, measured at 2026-03-02 09:00 -> 2026-03-02 09:15 UTC"
    )


def test_the_observation_slots_run_from_the_start_to_two_hours_after_the_infusion() -> None:
    found = slots(T0, rules=RULES)
    assert found[0] == T0 and found[-1] == T0 + timedelta(hours=3) and len(found) == 13


def full(at: datetime) -> Reading:
    return reading(at, temperature_c="36.8", systolic_bp="120")


def test_every_slot_needs_each_required_sign_within_the_tolerance() -> None:
    readings = [full(s) for s in slots(T0, rules=RULES)]
    assert gaps(T0, readings, rules=RULES) == []
    shifted = [full(s + timedelta(minutes=5)) for s in slots(T0, rules=RULES)]  # exactly at the tolerance
    assert gaps(T0, shifted, rules=RULES) == []
    late = [full(s + timedelta(minutes=6)) for s in slots(T0, rules=RULES)]
    assert len(gaps(T0, late, rules=RULES)) == 13


def test_a_gap_names_the_slot_and_the_missing_signs() -> None:
    readings = [full(s) for s in slots(T0, rules=RULES) if s != T0 + timedelta(minutes=45)]
    readings.append(reading(T0 + timedelta(minutes=46), temperature_c="37.0"))  # no BP at 09:45
    [gap] = gaps(T0, readings, rules=RULES)
    assert gap.slot == T0 + timedelta(minutes=45) and gap.missing == ("systolic_bp",)
    assert gap.describe() == "2026-03-02 09:45 UTC: no systolic BP"
    assert monitoring_incomplete([gap], rules=RULES)
    assert not monitoring_incomplete([gap], rules=RULES.model_copy(update={"allowed_missing_slots": 1}))


def test_signs_from_separate_records_fill_one_slot() -> None:
    readings = [reading(s, temperature_c="37") for s in slots(T0, rules=RULES)]
    readings += [reading(s + timedelta(minutes=2), systolic_bp="118") for s in slots(T0, rules=RULES)]
    assert gaps(T0, readings, rules=RULES) == []


def test_the_check_waits_for_the_end_of_the_observation_and_the_entry_grace() -> None:
    end = T0 + timedelta(hours=3, minutes=5)  # last slot + tolerance
    assert not check_due(T0, rules=RULES, now=end - timedelta(seconds=1))
    assert check_due(T0, rules=RULES, now=end)
    graced = RULES.model_copy(update={"entry_grace_hours": 24})
    assert not check_due(T0, rules=graced, now=end + timedelta(hours=23))
    assert check_due(T0, rules=graced, now=end + timedelta(hours=24))


@given(st.decimals(min_value=Decimal("35.0"), max_value=Decimal("43.0"), places=2))
def test_fever_grade_follows_the_ctcae_bands_for_any_temperature(temperature: Decimal) -> None:
    found = fever(reading(T0, temperature_c=str(temperature)), [])
    expected = (
        None
        if temperature < Decimal("38.0")
        else 1
        if temperature <= Decimal("39.0")
        else 2
        if temperature <= Decimal("40.0")
        else 3
    )
    assert (found.grade if found else None) == expected


@given(
    st.integers(min_value=60, max_value=250),
    st.integers(min_value=30, max_value=150),
    st.integers(min_value=1, max_value=30),
)
def test_a_higher_pressure_never_grades_lower(systolic: int, diastolic: int, rise: int) -> None:
    def grade(s: int, d: int) -> int:
        found = hypertension(reading(T0, systolic_bp=str(s), diastolic_bp=str(d)))
        return found.grade if found else 0

    assert grade(systolic + rise, diastolic) >= grade(systolic, diastolic)
    assert grade(systolic, diastolic + rise) >= grade(systolic, diastolic)
