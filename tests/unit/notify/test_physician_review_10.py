"""A safety physician (review 10) tries to break the withdrawal of lab and vital-sign findings that no longer stand
(`lab.toxicity_withdrawn` with `standing_result` and `withdrawn_result_id`; safety's `vitals.withdrawals`,
`infusion_day.vitals_status_changed` and its correction path; notify's `lab_withdrawal_signals`, `lab_alerts`) with
what happens on NCT07212335's infusion days and in its cytopenic subjects after CAR-T: one vitals set that gives a
fever and a low pressure, a pressure corrected but not the temperature, two low-pressure screens of which the paged
one is taken back, a hypertension corrected below the protocol's grade, a fever that lasts more than 24 h (CTCAE
grade 4) once a reading is taken back or corrected, a set keyed on the wrong day, and a platelet count corrected
within grade 4. Does anything escalate for a value taken back, or fall silent (or show a value the site took back)
while a finding stands? Signals are those safety raises (tests.unit.safety.clinical.Driver), applied to notify in
the order given."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.notify.models import Alert, Obligation
from shared.events import LabResulted
from tests.unit.notify.conftest import Notifier
from tests.unit.notify.infused_subject import START, findings, hand_over, send, to_officer, vs
from tests.unit.notify.infused_subject import safety as safety  # the fixture
from tests.unit.notify.test_physician_review_7 import platelets
from tests.unit.safety.clinical import Driver, status
from tests.unit.safety.test_clinical_rules import at


def taken_back(vitals_id: str, when: datetime) -> Any:
    """The site marks a vitals set entered in error (wrong patient's chart), received at `when`."""
    return status("A-1", "vitals", vitals_id).model_copy(update={"receivedat": when})


def corrected(envelope: LabResulted, value: str) -> LabResulted:
    data = envelope.data.model_copy(update={"value": value})
    return envelope.model_copy(update={"id": f"{envelope.id}-corr", "data": data})


def alert_of(notifier: Notifier, term: str) -> Alert:
    [row] = [a for a in notifier.rows(Alert) if a.thread_key.endswith(f":{term}")]
    return row  # type: ignore[no-any-return]


def reviews_of(notifier: Notifier, term: str) -> list[str]:
    return sorted(o.state for o in notifier.rows(Obligation, alert_id=alert_of(notifier, term).id))


def fever_grades(out: list[Any]) -> list[int]:
    return [s.data.grade for s in out if getattr(s, "type", None) == "lab.toxicity" and s.data.term == "Fever"]


# --- one vitals set, several findings -----------------------------------------------------------------------------


def test_a_set_with_fever_and_low_pressure_taken_back_cancels_both_reviews(safety: Driver, notifier: Notifier) -> None:
    """45 minutes into the infusion a set reads 39.4 C and 82/50 mm Hg: a grade 2 fever and the protocol's
    low-pressure screen both page. The nurse finds it was the next bed's patient and marks the set entered in error.
    At 3 a.m. the officer must not be chased by two reviews for a patient who had neither: both reviews are
    cancelled, both alerts say the finding no longer stands, and the officer is told once per finding paged."""
    out = findings(safety.apply(vs("VS-1", START + timedelta(minutes=45), temperature_c="39.4", systolic_bp="82")))
    assert sorted(s.data.term for s in out) == ["Fever", "Hypotension"]
    send(notifier, out)
    hand_over(notifier)
    gone = findings(safety.apply(taken_back("VS-1", START + timedelta(hours=3))))
    assert sorted((s.data.term, s.data.standing_grade) for s in gone) == [("Fever", None), ("Hypotension", None)]
    send(notifier, gone)
    for term in ("Fever", "Hypotension"):
        assert reviews_of(notifier, term) == ["cancelled"], term
        assert "no longer stands" in alert_of(notifier, term).title
    assert notifier.pending() == [], "nothing escalates for a set taken back"
    notices = [d for d in to_officer(notifier) if "no review needed" in d.subject]
    assert sorted("Fever" in d.subject for d in notices) == [False, True]


def test_a_pressure_corrected_in_a_febrile_set_leaves_the_fever_review_alone(
    safety: Driver, notifier: Notifier
) -> None:
    """The same set: 39.4 C and 82/50. The monitor's cuff was on the wrong size; the nurse corrects the pressure to
    128/80 but the temperature was right. The low-pressure review is cancelled and the officer told; the fever,
    still there in a neutropenic patient, keeps its open review and its clocks, with no new page."""
    first = vs("VS-1", START + timedelta(minutes=45), temperature_c="39.4", systolic_bp="82", diastolic_bp="50")
    send(notifier, findings(safety.apply(first)))
    hand_over(notifier)
    fixed = vs(
        "VS-1",
        START + timedelta(minutes=45),
        tag="-bp",
        received=40,
        temperature_c="39.4",
        systolic_bp="128",
        diastolic_bp="80",
    )
    out = findings(safety.apply(fixed))
    assert [(s.type, s.data.term) for s in out] == [("lab.toxicity_withdrawn", "Hypotension")]
    send(notifier, out)
    assert reviews_of(notifier, "Hypotension") == ["cancelled"]
    assert reviews_of(notifier, "Fever") == ["open"]
    fever = alert_of(notifier, "Fever")
    assert fever.state == "open" and "no longer stands" not in fever.title and fever.details.get("value") == "39.4"
    assert any(t.alert_id == fever.id for t in notifier.pending()), "the fever review still escalates"
    [notice] = [d for d in to_officer(notifier) if "no review needed" in d.subject]
    assert "Hypotension" in notice.subject and "systolic BP 82 mm Hg -> 128 mm Hg" in notice.body_text


def test_the_paged_low_pressure_taken_back_shows_the_one_that_stands(safety: Driver, notifier: Notifier) -> None:
    """At 10:00 82/50 pages the low-pressure screen; at 10:15 86/52 (still below 90, not news). The 10:00 set was
    another patient's. A pressure below 90 still stands for A-1: the review stays open, nobody is paged for it, and
    the alert now shows 86 mm Hg from the 10:15 set, never the 82 the site took back."""
    send(notifier, findings(safety.apply(vs("VS-1", at(0, 10), systolic_bp="82", diastolic_bp="50"))))
    assert findings(safety.apply(vs("VS-2", at(0, 10) + timedelta(minutes=15), systolic_bp="86"))) == []
    hand_over(notifier)
    sent = len(notifier.deliveries())
    send(notifier, findings(safety.apply(taken_back("VS-1", at(0, 12)))))
    row = alert_of(notifier, "Hypotension")
    assert reviews_of(notifier, "Hypotension") == ["open"] and notifier.pending()
    assert (row.details["result_id"], row.details["value"]) == ("VS-2", "86")
    assert "82" not in str(row.details["reason"])
    assert len(notifier.deliveries()) == sent, "nobody paged or told: the same finding stands"


def test_both_low_pressures_taken_back_in_turn_cancel_the_review(safety: Driver, notifier: Notifier) -> None:
    """Then the 10:15 set is found to be the other patient's too: no low pressure stands for A-1. The review the
    10:00 set opened (now showing the 10:15 set) is cancelled and the officer told once."""
    send(notifier, findings(safety.apply(vs("VS-1", at(0, 10), systolic_bp="82", diastolic_bp="50"))))
    safety.apply(vs("VS-2", at(0, 10) + timedelta(minutes=15), systolic_bp="86"))
    hand_over(notifier)
    send(notifier, findings(safety.apply(taken_back("VS-1", at(0, 12)))))
    last = findings(safety.apply(taken_back("VS-2", at(0, 13))))
    assert [(s.data.withdrawn_result_id, s.data.standing_grade) for s in last] == [("VS-2", None)]
    send(notifier, last)
    assert reviews_of(notifier, "Hypotension") == ["cancelled"] and notifier.pending() == []
    assert len(to_officer(notifier)) == 2, "the page, then one notice"


def test_a_grade_3_hypertension_corrected_below_the_protocols_grade_is_withdrawn(
    safety: Driver, notifier: Notifier
) -> None:
    """165/95 at 30 minutes pages hypertension at least grade 3 (the protocol's threshold for it is grade 3).
    The nurse corrects it to 150/95 (grade 2 by pressure, below the threshold): no review is owed, escalation stops,
    the officer is told once that grade 3 no longer stands."""
    when = START + timedelta(minutes=30)
    page = findings(safety.apply(vs("VS-1", when, systolic_bp="165", diastolic_bp="95")))
    assert [(s.data.term, s.data.grade, s.data.floor) for s in page] == [("Hypertension", 3, True)]
    send(notifier, page)
    hand_over(notifier)
    fixed = findings(safety.apply(vs("VS-1", when, tag="-c", received=20, systolic_bp="150", diastolic_bp="95")))
    assert [(s.data.withdrawn_grade, s.data.standing_grade) for s in fixed] == [(3, None)]
    send(notifier, fixed)
    assert reviews_of(notifier, "Hypertension") == ["cancelled"] and notifier.pending() == []
    assert alert_of(notifier, "Hypertension").title.startswith("Hypertension: grade 3 no longer stands")
    assert len(to_officer(notifier)) == 2


# --- a fever above 40.0 C for more than 24 h (CTCAE grade 4) ---------------------------------------------------------


def test_a_normal_reading_taken_back_that_broke_a_run_above_40_pages_grade_4(
    safety: Driver, notifier: Notifier
) -> None:
    """Day 0 10:00 40.5 C (grade 3) pages. At 22:00 39.8 C is charted, and at 11:00 on day 1 40.3 C: by the
    readings the run above 40.0 C restarted, so day 1 is grade 3 again. The 22:00 reading turns out to be the next
    bed's patient and is taken back: A-1 has been above 40.0 C for 25 h, a grade 4 (life-threatening) fever in a
    neutropenic patient days after cell therapy. The officer must be paged for grade 4."""
    send(notifier, findings(safety.apply(vs("VS-1", at(0, 10), temperature_c="40.5"))))
    safety.apply(vs("VS-M", at(0, 22), temperature_c="39.8"))
    send(notifier, findings(safety.apply(vs("VS-2", at(1, 11), temperature_c="40.3"))))
    out = findings(safety.apply(taken_back("VS-M", at(1, 12))))
    assert fever_grades(out) == [4], "safety raises the grade 4 fever that now stands"
    send(notifier, out)
    assert alert_of(notifier, "Fever").title.startswith("Fever grade 4")


def test_a_reading_corrected_upwards_that_makes_a_run_above_40_longer_than_24_h_pages_grade_4(
    safety: Driver, notifier: Notifier
) -> None:
    """Day 0 10:00 is charted 37.5 C; day 1 11:00 40.3 C pages grade 3. The nurse corrects day 0's reading: the
    thermometer said 40.5 C (a transcription slip). The fever has now lasted 25 h above 40.0 C: grade 4."""
    safety.apply(vs("VS-1", at(0, 10), temperature_c="37.5"))
    send(notifier, findings(safety.apply(vs("VS-2", at(1, 11), temperature_c="40.3"))))
    out = findings(safety.apply(vs("VS-1", at(0, 10), tag="-c", received=26 * 60, temperature_c="40.5")))
    assert 4 in fever_grades(out), "safety raises the grade 4 fever that now stands"
    send(notifier, out)
    assert alert_of(notifier, "Fever").title.startswith("Fever grade 4")


def test_the_reading_that_started_a_grade_4_run_taken_back_leaves_no_grade_4_shown(
    safety: Driver, notifier: Notifier
) -> None:
    """Day 0 10:00 40.5 C pages grade 3; day 1 11:00 40.3 C pages grade 4 (above 40.0 C for 25 h). The day-0
    reading was another patient's. A-1's fever is grade 3 (40.3 C, no run): the alert must stop saying grade 4 and
    'for 25.0 h', and the review of a grade 3 fever stays open."""
    first = findings(safety.apply(vs("VS-1", at(0, 10), temperature_c="40.5")))
    second = findings(safety.apply(vs("VS-2", at(1, 11), temperature_c="40.3")))
    assert fever_grades(first + second) == [3, 4]
    send(notifier, first + second)
    hand_over(notifier)
    send(notifier, findings(safety.apply(taken_back("VS-1", at(1, 12)))))
    row = alert_of(notifier, "Fever")
    assert reviews_of(notifier, "Fever")[-1] == "open"
    assert row.details["grade"] == 3 and "25.0 h" not in str(row.details["reason"])


# --- what the alert shows -----------------------------------------------------------------------------------------


def test_a_fever_keyed_on_the_infusion_day_but_measured_on_day_3_shows_day_3(
    safety: Driver, notifier: Notifier
) -> None:
    """39.4 C is charted at 10:00 on the infusion day and pages (it reads as an infusion reaction). The nurse
    corrects the date: it was measured on day 3 (she keyed the wrong day). A fever three days after the infusion in
    a neutropenic patient points to infection, not to the infusion: the officer deciding at 3 a.m. must see day 3."""
    send(notifier, findings(safety.apply(vs("VS-1", at(0, 10), temperature_c="39.4"))))
    hand_over(notifier)
    sent = len(notifier.deliveries())
    send(
        notifier, findings(safety.apply(vs("VS-1", at(3, 10), tag="-date", received=3 * 24 * 60, temperature_c="39.4")))
    )
    assert reviews_of(notifier, "Fever") == ["open"] and len(notifier.deliveries()) == sent, "the same fever: no page"
    shown = datetime.fromisoformat(str(alert_of(notifier, "Fever").details["collected_at"]))
    assert shown == at(3, 10)


def test_a_platelet_count_corrected_within_grade_4_shows_the_corrected_value(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 x10^9/L (grade 4) pages. The lab corrects it to 22 (still grade 4, < 25). Whether to give
    a prophylactic platelet transfusion turns on < 10 vs 22: the alert must not go on showing 10, a value the site
    took back (the notify module's claim: 'the alert never shows a value the site took back')."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    send(notifier, findings(safety.apply(corrected(platelets("P8", "10", 8), "22"))))
    assert alert_of(notifier, "Platelet count decreased").details["value"] == "22"


def test_a_grade_4_count_whose_collection_time_is_corrected_shows_the_corrected_time(
    safety: Driver, notifier: Notifier
) -> None:
    """(Added with the fix of the test above.) The same count of 10 was drawn on day 9, not day 8 as keyed: still grade
    4. The alert shows day 9; the review, its clocks and its escalation are as they were, nobody is paged or mailed,
    and the history says the result was revised."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    hand_over(notifier)
    term = "Platelet count decreased"
    clock = [(o.id, o.state, o.clock_started_at, o.due_at) for o in notifier.rows(Obligation)]
    assert [state for _, state, _, _ in clock] == ["open"]
    timers = [(t.kind, t.due_at) for t in notifier.pending()]
    moved = platelets("P8", "10", 9).model_copy(update={"id": "lab-P8-day9"})
    out = findings(safety.apply(moved))
    assert [(s.type, s.data.withdrawn_result_id, s.data.standing_result_id) for s in out] == [
        ("lab.toxicity_withdrawn", "P8", "P8")
    ]
    send(notifier, out)
    shown = alert_of(notifier, term)
    assert datetime.fromisoformat(shown.details["collected_at"]) == at(9) and shown.details["value"] == "10"
    after = [(o.id, o.state, o.clock_started_at, o.due_at) for o in notifier.rows(Obligation)]
    assert after == clock, "the review and its clock are unchanged"
    assert [(t.kind, t.due_at) for t in notifier.pending()] == timers
    assert len(notifier.deliveries()) == 1, "nobody paged or mailed"
    [revised] = [h for h in notifier.history() if h.action == "lab_finding_revised"]
    assert "result P8 revised, still grade 4 (10 10^9/L), now shown" in revised.detail


def test_two_grade_4_counts_taken_back_in_turn_show_the_standing_one_then_cancel(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4) pages; day-9 15 (grade 4) follows, not news. Day 9's is taken back first (a
    clotted sample): the alert, showing day 8, is unchanged. Then day 8's is taken back (another patient's tube): no
    grade 4 and nothing at or above grade 3 stands (the screening count is 60). The review is cancelled and the
    officer told once; nothing shows a count the site took back."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    assert findings(safety.apply(platelets("P9", "15", 9))) == []
    hand_over(notifier)
    first = findings(safety.apply(status("A-1", "lab", "P9")))
    send(notifier, first)
    term = "Platelet count decreased"
    assert alert_of(notifier, term).details["result_id"] == "P8" and reviews_of(notifier, term) == ["open"]
    last = findings(safety.apply(status("A-1", "lab", "P8")))
    assert [(s.data.withdrawn_grade, s.data.standing_grade) for s in last] == [(4, None)]
    send(notifier, last)
    assert reviews_of(notifier, term) == ["cancelled"] and notifier.pending() == []
    assert len(to_officer(notifier)) == 2


def test_the_paged_grade_4_corrected_to_grade_3_after_its_twin_was_taken_back_shows_grade_3(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 10 pages grade 4, day-9 15 (grade 4) follows; day 8's is taken back, so the alert shows day 9's 15.
    The lab then corrects day 9's to 30 (grade 3: clumping on re-read). Grade 3 thrombocytopenia still owes its
    review: it stays open, the alert says grade 3 and shows 30, and nobody is paged for a better count."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    safety.apply(platelets("P9", "15", 9))
    hand_over(notifier)
    sent = len(notifier.deliveries())
    send(notifier, findings(safety.apply(status("A-1", "lab", "P8"))))
    out = findings(safety.apply(corrected(platelets("P9", "15", 9), "30")))
    assert [(s.data.withdrawn_grade, s.data.standing_grade, s.data.standing_result_id) for s in out] == [(4, 3, "P9")]
    send(notifier, out)
    row = alert_of(notifier, "Platelet count decreased")
    assert row.title.startswith("Platelet count decreased grade 3 (grade 4 no longer stands)")
    assert (row.details["result_id"], row.details["value"]) == ("P9", "30")
    assert reviews_of(notifier, "Platelet count decreased") == ["open"] and notifier.pending()
    assert len(notifier.deliveries()) == sent
