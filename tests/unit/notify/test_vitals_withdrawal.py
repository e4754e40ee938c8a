"""A fever the nurse corrects or takes back, through safety and notify: the review of a finding that no longer stands
is cancelled and whoever was paged told once, as for a lab result; a lower grade that stands keeps the review and
shows the reading that stands; a correction of another reading, or one the alert has moved past, is history."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.notify.models import Alert, Obligation
from shared.events import VitalsRecorded
from tests.unit.notify.conftest import Notifier
from tests.unit.notify.infused_subject import START, findings, hand_over, send, to_officer
from tests.unit.notify.infused_subject import safety as safety  # the fixture
from tests.unit.safety.clinical import Driver, status, vitals


def temperature(vitals_id: str, value: str, minutes: int, *, tag: str = "", received: int = 0) -> VitalsRecorded:
    """A set measured `minutes` after the start, received `received` minutes after it was measured."""
    measured = START + timedelta(minutes=minutes)
    envelope = vitals("A-1", measured, vitals_id=vitals_id, temperature_c=value)
    return envelope.model_copy(
        update={"id": f"{envelope.id}{tag}", "receivedat": measured + timedelta(minutes=received)}
    )


def alert(notifier: Notifier) -> Alert:
    row: Alert = notifier.only(Alert)
    return row


def reviews(notifier: Notifier) -> list[str]:
    return sorted(o.state for o in notifier.rows(Obligation))


def test_a_fever_corrected_to_normal_cancels_its_review_and_tells_the_officer_once(
    safety: Driver, notifier: Notifier
) -> None:
    fever = findings(safety.apply(temperature("VS-1", "39.2", 30)))
    fixed = findings(safety.apply(temperature("VS-1", "37.2", 30, tag="-fix", received=10)))
    send(notifier, fever)
    hand_over(notifier)
    send(notifier, fixed)
    assert reviews(notifier) == ["cancelled"] and notifier.pending() == [], "nothing escalates for 37.2 C"
    assert alert(notifier).title.startswith("Fever: grade 2 no longer stands")
    page, notice = to_officer(notifier)
    assert "Fever grade 2" in page.subject
    assert "Vital-sign finding withdrawn, no review needed: Fever grade 2" in notice.subject
    assert "temperature 39.2 C -> 37.2 C" in notice.body_text


def test_a_fever_corrected_to_a_lower_grade_keeps_its_review_and_shows_the_value_that_stands(
    safety: Driver, notifier: Notifier
) -> None:
    fever = findings(safety.apply(temperature("VS-1", "40.5", 30)))
    lower = findings(safety.apply(temperature("VS-1", "39.5", 30, tag="-fix", received=10)))
    send(notifier, fever)
    hand_over(notifier)
    send(notifier, lower)
    row = alert(notifier)
    assert row.state == "open" and row.title.startswith("Fever grade 2 (grade 3 no longer stands)")
    assert (row.details["result_id"], row.details["value"], row.details["grade"]) == ("VS-1", "39.5", 2)
    assert "40.5" not in row.details["reason"]
    assert reviews(notifier) == ["open"] and notifier.pending(), "grade 2 still owes its review"
    assert len(notifier.deliveries()) == 1, "nobody paged for a better temperature"


def test_a_fever_corrected_within_its_grade_shows_the_temperature_that_stands(
    safety: Driver, notifier: Notifier
) -> None:
    """39.2 C re-entered as 39.5 C (grade 2 either way): the alert shows 39.5, the review stays, nobody is paged."""
    fever = findings(safety.apply(temperature("VS-1", "39.2", 30)))
    revised = findings(safety.apply(temperature("VS-1", "39.5", 30, tag="-fix", received=10)))
    send(notifier, fever)
    hand_over(notifier)
    send(notifier, revised)
    row = alert(notifier)
    assert (row.details["result_id"], row.details["value"], row.details["grade"]) == ("VS-1", "39.5", 2)
    assert row.title.startswith("Fever grade 2") and "no longer stands" not in row.title
    assert reviews(notifier) == ["open"] and len(notifier.deliveries()) == 1


def test_correcting_an_earlier_fever_leaves_the_review_of_the_one_shown(safety: Driver, notifier: Notifier) -> None:
    """Day 0 39.2 C paged; 30 h later (another episode) 39.4 C paged again and is what the alert shows. The day-0
    reading corrected to normal withdraws its own finding, not the one under review."""
    first = findings(safety.apply(temperature("VS-1", "39.2", 30)))
    second = findings(safety.apply(temperature("VS-9", "39.4", 30 * 60)))
    fixed = findings(safety.apply(temperature("VS-1", "37.2", 30, tag="-fix", received=31 * 60)))
    assert [(s.type, s.data.term) for s in first + second + fixed] == [
        ("lab.toxicity", "Fever"),
        ("lab.toxicity", "Fever"),
        ("lab.toxicity_withdrawn", "Fever"),
    ]
    send(notifier, first + second + fixed)
    assert reviews(notifier) == ["open"] and notifier.pending()
    assert alert(notifier).details["result_id"] == "VS-9" and "no longer stands" not in alert(notifier).title
    assert notifier.history()[-1].action == "flagged_again"


def test_a_withdrawal_that_overtook_its_fever_keeps_it_from_paging_and_a_later_correction_pages(
    safety: Driver, notifier: Notifier
) -> None:
    """The correction's withdrawal (routine lane) reaches notify before the fever (signals topic): the fever, received
    before the correction, is history. The nurse then re-enters 39.4 C (the first correction was the typo): it pages."""
    fever = findings(safety.apply(temperature("VS-1", "39.2", 30)))
    fixed = findings(safety.apply(temperature("VS-1", "37.2", 30, tag="-fix", received=10)))
    send(notifier, fixed, live=False)
    send(notifier, fever)
    assert notifier.deliveries() == [] and notifier.rows(Obligation) == []
    again = findings(safety.apply(temperature("VS-1", "39.4", 30, tag="-again", received=20)))
    send(notifier, again)
    assert reviews(notifier) == ["open"] and len(notifier.deliveries()) == 1


def test_a_withdrawal_received_before_the_fever_shown_is_history(safety: Driver, notifier: Notifier) -> None:
    """39.2 C, corrected to 37.2 C, then back to 39.6 C: the last fever reaches notify before the withdrawal. The
    withdrawal is older than the reading shown and cancels nothing."""
    fever = findings(safety.apply(temperature("VS-1", "39.2", 30)))
    fixed = findings(safety.apply(temperature("VS-1", "37.2", 30, tag="-fix", received=10)))
    again = findings(safety.apply(temperature("VS-1", "39.6", 30, tag="-again", received=20)))
    send(notifier, fever + again)
    send(notifier, fixed, live=False)
    assert reviews(notifier) == ["open"] and notifier.pending()
    assert alert(notifier).details["value"] == "39.6"
    assert notifier.history()[-1].action == "flagged_again"


def test_a_vitals_set_taken_back_cancels_its_review(safety: Driver, notifier: Notifier) -> None:
    send(notifier, findings(safety.apply(temperature("VS-1", "39.2", 30))))
    hand_over(notifier)
    retraction = status("A-1", "vitals", "VS-1").model_copy(update={"receivedat": START + timedelta(hours=2)})
    send(notifier, findings(safety.apply(retraction)))
    assert reviews(notifier) == ["cancelled"] and notifier.pending() == []
    assert len(to_officer(notifier)) == 2


# --- readings graded again with a changed set (a run above 40.0 C) -----------------------------------------------


def test_the_start_of_a_run_taken_back_shows_grade_3_and_restored_pages_grade_4_again(
    safety: Driver, notifier: Notifier
) -> None:
    """40.5 C, then 40.3 C 25 h later pages grade 4. The first set taken back: the alert says grade 3 from the later
    reading, its review stays, nobody paged or told. Restored: grade 4 stands again and pages."""
    send(notifier, findings(safety.apply(temperature("VS-1", "40.5", 60))))
    send(notifier, findings(safety.apply(temperature("VS-2", "40.3", 26 * 60))))
    hand_over(notifier)
    sent = len(notifier.deliveries())
    retraction = status("A-1", "vitals", "VS-1").model_copy(update={"receivedat": START + timedelta(hours=27)})
    send(notifier, findings(safety.apply(retraction)))
    row = alert(notifier)
    assert row.title.startswith("Fever grade 3 (grade 4 no longer stands)")
    assert (row.details["result_id"], row.details["grade"], row.details["value"]) == ("VS-2", 3, "40.3")
    assert "25.0 h" not in row.details["reason"]
    assert reviews(notifier) == ["open"] and len(notifier.deliveries()) == sent, "grade 3 still owes its review"
    hand_over(notifier)
    restored = status("A-1", "vitals", "VS-1", "restored").model_copy(
        update={"receivedat": START + timedelta(hours=28)}
    )
    send(notifier, findings(safety.apply(restored)))
    row = alert(notifier)
    assert row.title.startswith("Fever grade 4") and row.details["grade"] == 4
    assert len(to_officer(notifier)) == 3, "paged for grade 3, grade 4, and grade 4 again"


def test_a_grade_4_withdrawn_from_a_reading_the_alert_does_not_show_is_history(
    safety: Driver, notifier: Notifier
) -> None:
    """Grade 4 paged from the 26 h reading; the 27 h one (grade 4 too) was not news. The start of the run taken back:
    both lose grade 4; the alert, showing the 26 h reading, says grade 3 once."""
    send(notifier, findings(safety.apply(temperature("VS-1", "40.5", 60))))
    send(notifier, findings(safety.apply(temperature("VS-2", "40.3", 26 * 60))))
    assert findings(safety.apply(temperature("VS-3", "40.2", 27 * 60))) == []
    hand_over(notifier)
    retraction = status("A-1", "vitals", "VS-1").model_copy(update={"receivedat": START + timedelta(hours=28)})
    out = findings(safety.apply(retraction))
    assert [s.data.withdrawn_result_id for s in out] == ["VS-1", "VS-2", "VS-3"]
    send(notifier, out)
    row = alert(notifier)
    assert (row.details["result_id"], row.details["grade"]) == ("VS-2", 3) and reviews(notifier) == ["open"]
    assert [h.action for h in notifier.history()][-3:] == ["flagged_again", "lab_finding_revised", "flagged_again"]


def test_a_fever_measured_on_another_day_shows_it_without_a_page(safety: Driver, notifier: Notifier) -> None:
    send(notifier, findings(safety.apply(temperature("VS-1", "39.4", 60))))
    hand_over(notifier)
    title = alert(notifier).title
    moved = findings(safety.apply(temperature("VS-1", "39.4", 3 * 24 * 60 + 60, tag="-date", received=10)))
    send(notifier, moved)
    row = alert(notifier)
    shown = datetime.fromisoformat(row.details["collected_at"])
    assert row.title == title and shown == START + timedelta(days=3, hours=1)
    assert reviews(notifier) == ["open"] and notifier.pending() and len(notifier.deliveries()) == 1
    assert notifier.history()[-1].action == "lab_finding_revised"
