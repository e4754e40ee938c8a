"""A safety physician (review 11) tries to break what changed in the grading of NCT07212335's vital signs and the
revision of results corrected within their grade: a change to a vitals set now grades again the readings of a fever
run above 40.0 C that depend on it (`vitals.judge_change`, `vitals.dependents`; CTCAE v5.0 grade 4 needs > 24 h
above 40.0 C), and a lab result or vital sign corrected within its grade revises what its alert shows
(`lab_revision`; notify's `lab_withdrawal_signals`, `lab_alerts.withdraws_another`). Cases: a night's readings
backfilled newest first, corrections that move a reading or the start of a run across the 24 h line, two runs split
by one normal reading, a febrile set with a low pressure, counts corrected twice or while acknowledged, a censored
ANC, a revision of a count not shown, a revision that overtakes its finding, a time moved after the review was
completed. Signals are those safety raises (tests.unit.safety.clinical.Driver), applied to notify in the order given
(a withdrawal takes the routine lane, `live=False`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.notify.models import Alert, Obligation
from shared.events import LabResulted
from tests.unit.notify.conftest import Notifier, act
from tests.unit.notify.infused_subject import OFFICER, START, findings, hand_over, send, to_officer, vs
from tests.unit.notify.infused_subject import safety as safety  # the fixture
from tests.unit.notify.test_physician_review_7 import platelets
from tests.unit.notify.test_physician_review_10 import alert_of, reviews_of
from tests.unit.safety.clinical import Driver, lab, status
from tests.unit.safety.test_clinical_rules import at

PLT = "Platelet count decreased"


def corrected(envelope: LabResulted, value: str, *, tag: str = "corr") -> LabResulted:
    """The lab's correction of a result: the same result id, another delivery."""
    data = envelope.data.model_copy(update={"value": value})
    return envelope.model_copy(update={"id": f"{envelope.id}-{tag}", "data": data})


def neut(rid: str, value: str, day: int) -> LabResulted:
    """A-1's ANC (10^9/L; CTCAE v5.0: < 1.0 grade 3, < 0.5 grade 4)."""
    return lab("A-1", result_id=rid, test="NEUT", value=value, lln="2.0", collected_at=at(day))


def shown_at(row: Alert) -> datetime:
    return datetime.fromisoformat(str(row.details["collected_at"]))


def actions(notifier: Notifier, term: str) -> list[str]:
    return [h.action for h in notifier.history(alert_of(notifier, term).id)]


# --- a run above 40.0 C graded again -----------------------------------------------------------------------------


def test_a_night_backfilled_newest_first_that_broke_the_run_takes_grade_4_back(
    safety: Driver, notifier: Notifier
) -> None:
    """40.5 C at 10:00 on day 0 pages grade 3. Nothing more is charted until 40.3 C at 11:00 on day 1, which (the run
    assumed unbroken, the cautious reading) pages grade 4. Next morning the ward transcribes the night from the paper
    chart, newest first: 06:00 40.4, 02:00 39.6, 22:00 40.8. The fever broke at 02:00: A-1 has been above 40.0 C for
    5 h, not 25 h. At 3 a.m. the officer must not work up a life-threatening fever that did not happen, but grade 3
    still owes its review: the alert says grade 3 from 11:00 (grade 4 no longer stands), its review stays open and
    escalating, and nobody is paged for the better news."""
    send(notifier, findings(safety.apply(vs("VS-1", at(0, 10), temperature_c="40.5"))))
    page = findings(safety.apply(vs("VS-5", at(1, 11), temperature_c="40.3")))
    assert [(s.data.grade, s.data.result_id) for s in page] == [(4, "VS-5")]
    send(notifier, page)
    hand_over(notifier)
    sent = len(notifier.deliveries())
    for vitals_id, when, value in (("VS-4", at(1, 6), "40.4"), ("VS-3", at(1, 2), "39.6"), ("VS-2", at(0, 22), "40.8")):
        backfill = vs(vitals_id, when, received=int((at(1, 13) - when) / timedelta(minutes=1)), temperature_c=value)
        send(notifier, findings(safety.apply(backfill)), live=False)
    row = alert_of(notifier, "Fever")
    assert row.title.startswith("Fever grade 3 (grade 4 no longer stands)")
    assert (row.details["result_id"], row.details["grade"], row.details["value"]) == ("VS-5", 3, "40.3")
    assert "25.0 h" not in str(row.details["reason"])
    assert reviews_of(notifier, "Fever") == ["open"] and notifier.pending(), "grade 3 still owes its review"
    assert len(notifier.deliveries()) == sent, "nobody paged for a fever that broke"


def test_the_history_of_a_grade_4_taken_back_by_the_night_backfill_says_the_grade_fell(
    safety: Driver, notifier: Notifier
) -> None:
    """The same night backfilled: the 02:00 reading of 39.6 C takes grade 4 back from the 11:00 reading. A physician
    auditing the alert in the morning reads its history to see what the officer was told and when: the entry must say
    that grade 4 no longer stands and grade 3 does, not that the 11:00 reading was revised and is 'still grade 3' (it
    never was grade 3 on this alert: it paged grade 4)."""
    send(notifier, findings(safety.apply(vs("VS-1", at(0, 10), temperature_c="40.5"))))
    send(notifier, findings(safety.apply(vs("VS-5", at(1, 11), temperature_c="40.3"))))
    night = vs("VS-3", at(1, 2), received=11 * 60, temperature_c="39.6")
    send(notifier, findings(safety.apply(night)), live=False)
    [entry] = [h for h in notifier.history(alert_of(notifier, "Fever").id) if h.action == "lab_finding_revised"]
    assert entry.detail.startswith("Fever grade 4:")
    assert "still grade 3" not in entry.detail, entry.detail


def test_a_reading_whose_time_is_corrected_past_24_h_pages_grade_4(safety: Driver, notifier: Notifier) -> None:
    """40.5 C at 10:00 on day 0 pages grade 3, 40.6 C at 22:00 is no news, and 40.3 C is charted at 09:00 on day 1:
    23 h above 40.0 C, still grade 3. The nurse corrects the time: it was measured at 11:00 (she keyed the time the
    antipyretic was due). A-1 has now been above 40.0 C for 25 h: grade 4, which must page, with a new review clock."""
    for vitals_id, when, value in (
        ("VS-1", at(0, 10), "40.5"),
        ("VS-2", at(0, 22), "40.6"),
        ("VS-3", at(1, 9), "40.3"),
    ):
        send(notifier, findings(safety.apply(vs(vitals_id, when, temperature_c=value))))
    hand_over(notifier)
    moved = findings(safety.apply(vs("VS-3", at(1, 11), tag="-time", received=60, temperature_c="40.3")))
    assert [(s.type, s.data.grade, s.data.previous_grade) for s in moved] == [("lab.toxicity", 4, 3)]
    send(notifier, moved)
    row = alert_of(notifier, "Fever")
    assert row.title.startswith("Fever grade 4") and row.state == "open"
    assert shown_at(row) == at(1, 11) and "25.0 h" in str(row.details["reason"])
    pages = to_officer(notifier)
    assert len(pages) == 2 and "Fever grade 4" in pages[-1].subject


def test_the_start_of_a_run_moved_later_brings_grade_4_back_to_grade_3(safety: Driver, notifier: Notifier) -> None:
    """40.5 C at 10:00 on day 0, 40.6 C at 22:00, 40.3 C at 11:00 on day 1: grade 4 (25 h) pages. The first reading
    was really taken at 12:00 (keyed from the admission note): 23 h above 40.0 C, grade 3. The alert must stop saying
    grade 4 and 25 h, keep the grade 3 review open and escalating, and page nobody; the correction of the first set
    (not the reading shown) only adds history."""
    for vitals_id, when, value in (
        ("VS-1", at(0, 10), "40.5"),
        ("VS-2", at(0, 22), "40.6"),
        ("VS-3", at(1, 11), "40.3"),
    ):
        send(notifier, findings(safety.apply(vs(vitals_id, when, temperature_c=value))))
    hand_over(notifier)
    sent = len(notifier.deliveries())
    out = findings(safety.apply(vs("VS-1", at(0, 12), tag="-time", received=26 * 60, temperature_c="40.5")))
    assert sorted((s.data.withdrawn_result_id, s.data.withdrawn_grade, s.data.standing_grade) for s in out) == [
        ("VS-1", 3, 3),
        ("VS-3", 4, 3),
    ]
    send(notifier, out, live=False)
    row = alert_of(notifier, "Fever")
    assert row.title.startswith("Fever grade 3 (grade 4 no longer stands)")
    assert (row.details["result_id"], row.details["grade"]) == ("VS-3", 3)
    assert "25.0 h" not in str(row.details["reason"]) and "23.0 h" in str(row.details["reason"])
    assert reviews_of(notifier, "Fever") == ["open"] and notifier.pending()
    assert len(notifier.deliveries()) == sent


def test_two_runs_split_by_one_normal_reading_each_page_grade_4_and_merging_them_pages_nothing_more(
    safety: Driver, notifier: Notifier
) -> None:
    """Run 1: 40.5 C day 0 10:00 to 40.3 C day 1 11:00 (grade 4 pages). 39.5 C at 14:00 on day 1 breaks it. Run 2:
    40.4 C day 1 18:00 to 40.2 C day 2 19:00 (25 h again: a second grade 4, more than 24 h after the first, pages).
    The 14:00 reading is taken back (another patient's): one run of 57 h. Grade 4 already stands and was paged
    twice: the officer is not paged a third time for the same fever, and the review stays open on the latest grade 4
    reading."""
    for vitals_id, when, value in (
        ("VS-1", at(0, 10), "40.5"),
        ("VS-2", at(1, 11), "40.3"),
        ("VS-3", at(1, 14), "39.5"),
        ("VS-4", at(1, 18), "40.4"),
        ("VS-5", at(2, 19), "40.2"),
    ):
        send(notifier, findings(safety.apply(vs(vitals_id, when, temperature_c=value))))
    assert [d.subject.split("]")[1].split(",")[0].strip() for d in to_officer(notifier)] == [
        "Fever grade 3",
        "Fever grade 4",
        "Fever grade 4",
    ]
    hand_over(notifier)
    merged = findings(safety.apply(status("A-1", "vitals", "VS-3").model_copy(update={"receivedat": at(2, 20)})))
    assert [s.type for s in merged] == [], "grade 4 stood on both sides: nothing withdrawn, nothing new"
    send(notifier, merged)
    row = alert_of(notifier, "Fever")
    assert (row.details["result_id"], row.details["grade"]) == ("VS-5", 4)
    assert len(to_officer(notifier)) == 3 and reviews_of(notifier, "Fever") == ["open"]


# --- a febrile set with a low pressure --------------------------------------------------------------------------


def test_a_temperature_corrected_within_grade_in_a_hypotensive_set_revises_only_the_fever(
    safety: Driver, notifier: Notifier
) -> None:
    """45 minutes into the infusion: 39.4 C and 84/50 mm Hg page a grade 2 fever and the low-pressure screen. The
    nurse corrects the temperature to 39.7 C (the tympanic reading, not the axillary one): still grade 2. The fever
    alert shows 39.7, the hypotension alert is untouched (nothing in its history), both reviews stay open, nobody is
    paged."""
    when = START + timedelta(minutes=45)
    send(notifier, findings(safety.apply(vs("VS-1", when, temperature_c="39.4", systolic_bp="84", diastolic_bp="50"))))
    hand_over(notifier)
    fixed = vs("VS-1", when, tag="-t", received=30, temperature_c="39.7", systolic_bp="84", diastolic_bp="50")
    out = findings(safety.apply(fixed))
    assert [(s.data.term, s.data.withdrawn_result_id, s.data.standing_result_id) for s in out] == [
        ("Fever", "VS-1", "VS-1")
    ]
    send(notifier, out, live=False)
    assert alert_of(notifier, "Fever").details["value"] == "39.7"
    assert actions(notifier, "Hypotension") == ["opened"]
    assert reviews_of(notifier, "Fever") == ["open"] and reviews_of(notifier, "Hypotension") == ["open"]
    assert len(notifier.deliveries()) == 2, "the two first pages only"


def test_a_diastolic_corrected_in_a_hypotensive_febrile_set_is_shown(safety: Driver, notifier: Notifier) -> None:
    """39.4 C and 84/50 mm Hg page a fever and the low-pressure screen. The nurse corrects the set: the diastolic was
    38, not 50 (mean pressure about 53 mm Hg), and the temperature 39.7 C. In a febrile neutropenic patient after cell
    therapy that is a picture of septic or distributive shock; CTCAE grades hypotension by the intervention it needs,
    so the officer grading it at 3 a.m. must see 84/38, not the 84/50 the site replaced. The fever alert is revised;
    the hypotension alert must be too."""
    when = START + timedelta(minutes=45)
    send(notifier, findings(safety.apply(vs("VS-1", when, temperature_c="39.4", systolic_bp="84", diastolic_bp="50"))))
    fixed = vs("VS-1", when, tag="-bp", received=30, temperature_c="39.7", systolic_bp="84", diastolic_bp="38")
    send(notifier, findings(safety.apply(fixed)), live=False)
    assert alert_of(notifier, "Fever").details["value"] == "39.7"
    assert reviews_of(notifier, "Hypotension") == ["open"]
    reason = str(alert_of(notifier, "Hypotension").details["reason"])
    assert "84/50" not in reason and "84/38" in reason, reason


# --- counts corrected within their grade ------------------------------------------------------------------------


def test_a_count_corrected_twice_within_grade_4_shows_the_last_value_and_pages_nobody(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4) pages. The lab corrects it to 22 (a re-read), then to 15 (the second re-read was
    of the wrong tube). The officer deciding on a prophylactic transfusion must see 15; each correction is in the
    history as a revision; nobody is paged or mailed, the review and its clock are unchanged."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    hand_over(notifier)
    clock = [(o.id, o.state, o.due_at) for o in notifier.rows(Obligation)]
    for tag, value in (("c1", "22"), ("c2", "15")):
        send(notifier, findings(safety.apply(corrected(platelets("P8", "10", 8), value, tag=tag))), live=False)
    row = alert_of(notifier, PLT)
    assert (row.details["result_id"], row.details["value"], row.details["grade"]) == ("P8", "15", 4)
    assert row.title.startswith(f"{PLT} grade 4") and "no longer stands" not in row.title
    assert actions(notifier, PLT)[-2:] == ["lab_finding_revised", "lab_finding_revised"]
    assert [(o.id, o.state, o.due_at) for o in notifier.rows(Obligation)] == clock
    assert len(notifier.deliveries()) == 1


async def test_a_count_revised_while_acknowledged_stays_acknowledged_and_still_falls_overdue(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 pages; the officer acknowledges at once. The lab corrects it to 22 (grade 4 still). The
    revision must not undo the acknowledgement (no page from step 0 for a value within its grade) nor stop the
    review's clock: if nobody records the review, the overdue page still comes when it is due."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    await notifier.at(notifier.clock.now() + timedelta(minutes=1))
    act(notifier, "acknowledge", actor=OFFICER)
    timers = [(t.kind, t.due_at) for t in notifier.pending()]
    assert "overdue" in [kind for kind, _ in timers]
    send(notifier, findings(safety.apply(corrected(platelets("P8", "10", 8), "22"))), live=False)
    row = alert_of(notifier, PLT)
    assert row.state == "acknowledged" and row.details["value"] == "22"
    assert [(t.kind, t.due_at) for t in notifier.pending()] == timers
    [(_, overdue_at)] = [t for t in timers if t[0] == "overdue"]
    sent = await notifier.at(overdue_at + timedelta(minutes=1))
    assert any(to == OFFICER and "overdue" in subject.lower() for to, subject in sent), sent


def test_a_censored_anc_rewritten_with_a_space_revises_nothing_and_a_number_revises(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 ANC '<0.1' (grade 4, below the analyser's range) pages. The LIS re-sends it as '< 0.1': the same value,
    nothing to revise, no history. Then the manual differential gives 0.3 (still grade 4): the alert shows 0.3, so
    the officer knows the count is measurable, and nobody is paged."""
    send(notifier, findings(safety.apply(neut("N8", "<0.1", 8))))
    hand_over(notifier)
    assert findings(safety.apply(corrected(neut("N8", "<0.1", 8), "< 0.1", tag="space"))) == []
    out = findings(safety.apply(corrected(neut("N8", "<0.1", 8), "0.3", tag="diff")))
    assert [(s.data.withdrawn_grade, s.data.standing_grade, s.data.standing_result_id) for s in out] == [(4, 4, "N8")]
    send(notifier, out, live=False)
    term = "Neutrophil count decreased"
    assert alert_of(notifier, term).details["value"] == "0.3"
    assert reviews_of(notifier, term) == ["open"] and len(notifier.deliveries()) == 1


def test_a_revision_of_a_count_not_shown_leaves_the_alert_on_the_count_that_paged(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4) pages; day-9 15 (grade 4) follows, no news. The lab corrects day 9's to 20 (still
    grade 4). The alert keeps showing the day-8 count that paged; the revision of the other count is only recorded."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    assert findings(safety.apply(platelets("P9", "15", 9))) == []
    hand_over(notifier)
    out = findings(safety.apply(corrected(platelets("P9", "15", 9), "20")))
    assert [(s.data.withdrawn_result_id, s.data.standing_result_id) for s in out] == [("P9", "P9")]
    send(notifier, out, live=False)
    row = alert_of(notifier, PLT)
    assert (row.details["result_id"], row.details["value"]) == ("P8", "10")
    assert actions(notifier, PLT)[-1] == "flagged_again" and reviews_of(notifier, PLT) == ["open"]
    assert len(notifier.deliveries()) == 1


def test_a_revision_that_overtakes_its_finding_is_not_lost(safety: Driver, notifier: Notifier) -> None:
    """Day-8 platelets 10 (grade 4) are entered on their own (the urgent lane); a minute later the lab corrects them
    to 22. The revision takes the routine lane and, with the signals topic backed up, reaches notify first. The
    finding then opens the alert. Whether to transfuse prophylactically turns on < 10 vs 22: the alert must show 22,
    not the 10 the lab took back (notify keeps a withdrawal that overtakes its finding for this very reason)."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    page = findings(safety.apply(platelets("P8", "10", 8)))
    revision = findings(safety.apply(corrected(platelets("P8", "10", 8), "22")))
    assert [(s.data.withdrawn_result_id, s.data.standing_result_id) for s in revision] == [("P8", "P8")]
    send(notifier, revision, live=False)
    send(notifier, page)
    row = alert_of(notifier, PLT)
    assert reviews_of(notifier, PLT) == ["open"], "grade 4 stands: its review is owed"
    assert row.details["value"] == "22", row.details["value"]


def test_a_fever_moved_to_day_3_after_its_review_was_completed_tells_the_reviewer(
    safety: Driver, notifier: Notifier
) -> None:
    """39.4 C charted at 10:00 on the infusion day pages; the officer completes the review: an infusion reaction,
    expected (the reference safety information lists fever up to grade 2). The nurse then corrects the date: it was
    measured on day 3. A fever on day 3 in a neutropenic patient points to infection, not to the infusion: the
    attribution (and expectedness) recorded rests on a time that no longer stands. As for a withdrawal after the
    review, whoever was paged must be told once; nobody is paged for a new review."""
    send(notifier, findings(safety.apply(vs("VS-1", at(0, 10), temperature_c="39.4"))))
    hand_over(notifier)
    act(notifier, "complete", actor=OFFICER, reference="AE-7 infusion-related reaction, expected")
    moved = findings(safety.apply(vs("VS-1", at(3, 10), tag="-date", received=10, temperature_c="39.4")))
    send(notifier, moved, live=False)
    row = alert_of(notifier, "Fever")
    assert shown_at(row) == at(3, 10) and reviews_of(notifier, "Fever") == ["completed"]
    assert len(to_officer(notifier)) == 2, "the page, then one notice that the time reviewed changed"
