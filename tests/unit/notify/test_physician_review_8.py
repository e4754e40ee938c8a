"""A safety physician (review 8) tries to break the numbering of a lab term's signals (`LabToxicityData.sequence`,
`safety_lab_terms.signals_raised`) and notify's use of it (`lab_alerts.raised_before`: a lower number is history, a
higher one news) with what a site or a central lab produces: a transaction rolled back by a poison record, a result
re-sent unchanged or reformatted, a correction down and back with the lanes swapped, a retracted result restored,
and the open alerts of the day the numbering shipped. The lab signals are the ones safety raises
(tests.unit.safety.clinical.Driver), applied to notify in the order given."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from services.safety.clinical_events import open_batch
from services.safety.ctcae.tests_map import known_tests, terms_for_test
from services.safety.models import LabTermState
from shared.db import make_engine
from shared.events import LabToxicity
from shared.kafka import PoisonMessage
from shared.protocol import Protocol
from tests.unit.notify.conftest import Notifier
from tests.unit.notify.test_physician_review_7 import lab_signals, platelets, shown, to_notify
from tests.unit.safety.clinical import SIGNALS, Driver, dose, status, vitals
from tests.unit.safety.test_clinical_rules import at, subject_in


@pytest.fixture
def safety(tmp_path: Path, protocol: Protocol) -> Driver:
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/safety.db"), protocol)
    subject_in(driver, "A-1", "A", visit=False)
    driver.apply(platelets("P0", "60", -2, baseline=True))  # screening grade 2 (post-CAR-T cytopenia)
    return driver


def numbers(signals: list[LabToxicity]) -> list[tuple[str, int, int | None]]:
    return [(s.data.result_id, s.data.grade, s.data.sequence) for s in signals]


def test_a_batch_rolled_back_by_a_poison_record_does_not_use_up_a_number(safety: Driver, notifier: Notifier) -> None:
    """A central lab's batch: A-1's grade 3 (day 5), then a record for another trial (poison). The transaction rolls
    back and the consumer commits what came before the poison on its own, then the rest: the grade 3 keeps number 1
    (numbers live in the same transaction as the result), the day-8 grade 4 gets 2, and notify pages both."""
    wrong_trial = platelets("X9", "10", 6).model_copy(update={"trialid": "NCT00000000", "id": "wrong-trial"})
    with Session(safety.engine) as session, pytest.raises(PoisonMessage), session.begin():
        batch = open_batch(safety.protocol, SIGNALS)(session, at(5), [platelets("P5", "30", 5), wrong_trial])
        assert numbers(lab_signals([o.envelope for o in batch.apply(platelets("P5", "30", 5))])) == [("P5", 3, 1)]
        batch.apply(wrong_trial)
    g3 = lab_signals(safety.apply(platelets("P5", "30", 5)))
    g4 = lab_signals(safety.apply(platelets("P8", "10", 8)))
    assert numbers(g3 + g4) == [("P5", 3, 1), ("P8", 4, 2)]
    to_notify(notifier, g3 + g4)
    assert len(notifier.deliveries()) == 2 and shown(notifier)["result_id"] == "P8"


def test_a_result_re_sent_unchanged_or_reformatted_raises_nothing_and_uses_no_number(
    safety: Driver, notifier: Notifier
) -> None:
    """The LIMS re-sends the day-5 grade 3 under a new delivery id, then again with its LLN written '150.0': no page,
    no number used; the day-8 grade 4 is number 2 and pages."""
    first = lab_signals(safety.apply(platelets("P5", "30", 5)))
    again = safety.apply(platelets("P5", "30", 5).model_copy(update={"id": "lims-resend"}))
    reformatted = platelets("P5", "30", 5)
    reformatted = reformatted.model_copy(
        update={"id": "lims-reformatted", "data": reformatted.data.model_copy(update={"lln": "150.0"})}
    )
    again += safety.apply(reformatted)
    assert lab_signals(again) == []
    g4 = lab_signals(safety.apply(platelets("P8", "10", 8)))
    assert numbers(first + g4) == [("P5", 3, 1), ("P8", 4, 2)]
    to_notify(notifier, first + g4)
    assert len(notifier.deliveries()) == 2


def test_a_correction_down_and_back_arriving_before_the_original_grade_4_pages_once_for_it(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4, number 2) corrected to 30 (clumped sample) and back to 10 (the repeat confirmed
    it: grade 4 again, number 3, a backfill's lane). The confirmation reaches notify before the original grade 4:
    the grade 4 pages once (number 3) and the original, arriving last with a lower number, is history."""
    g3 = lab_signals(safety.apply(platelets("P5", "30", 5)))
    original = lab_signals(safety.apply(platelets("P8", "10", 8)))
    assert lab_signals(safety.apply(platelets("P8", "30", 8).model_copy(update={"id": "P8-down"}))) == []
    back = lab_signals(safety.apply(platelets("P8", "10", 8).model_copy(update={"id": "P8-back"})))
    assert numbers(g3 + original + back) == [("P5", 3, 1), ("P8", 4, 2), ("P8", 4, 3)]
    to_notify(notifier, g3 + back)
    to_notify(notifier, original, live=False)
    assert len(notifier.deliveries()) == 2
    assert (shown(notifier)["result_id"], shown(notifier)["sequence"]) == ("P8", 3)


def test_a_retracted_grade_4_restored_pages_again_on_the_safe_side(safety: Driver, notifier: Notifier) -> None:
    """The site takes day 8's grade 4 back (thought mislabelled), then restores it (it was A-1's): safety raises it
    again as number 3 (previous grade 3) and notify pages it. The alert showed it all along (a retraction sends no
    signal), so the page repeats a grade the officer saw; that is noise on the safe side, the same as before the
    numbering, and a restored grade 4 thrombocytopenia is worth a second look."""
    signals = lab_signals(safety.apply(platelets("P5", "30", 5)) + safety.apply(platelets("P8", "10", 8)))
    assert lab_signals(safety.apply(status("A-1", "lab", "P8"))) == []
    restored = lab_signals(safety.apply(status("A-1", "lab", "P8", "restored")))
    assert numbers(restored) == [("P8", 4, 3)] and restored[0].data.previous_grade == 3
    to_notify(notifier, signals + restored)
    assert len(notifier.deliveries()) == 3 and shown(notifier)["sequence"] == 3


def test_a_backfill_arriving_after_a_new_episode_does_not_bring_back_retracted_grades(
    safety: Driver, notifier: Notifier
) -> None:
    """A backfill of two counts (grade 3 day 5, grade 4 day 8: numbers 1, 2), both then taken back (another
    patient's samples), and a live grade 3 drawn on day 12 (number 3, previous none): the live count reaches notify
    first, then the backfill's two. Both are history (lower numbers, drawn before the one shown): the alert shows
    the day-12 grade 3 that stands, and the retracted grade 4 never comes back to the top of it."""
    backfill = lab_signals(safety.apply(platelets("P5", "30", 5)) + safety.apply(platelets("P8", "10", 8)))
    safety.apply(status("A-1", "lab", "P5"))
    safety.apply(status("A-1", "lab", "P8"))
    live = lab_signals(safety.apply(platelets("P12", "35", 12)))
    assert numbers(backfill + live) == [("P5", 3, 1), ("P8", 4, 2), ("P12", 3, 3)]
    to_notify(notifier, live)
    to_notify(notifier, backfill, live=False)
    assert len(notifier.deliveries()) == 1
    assert shown(notifier)["result_id"] == "P12"


def test_the_first_numbered_signal_against_an_alert_open_before_the_numbering_pages(
    safety: Driver, notifier: Notifier
) -> None:
    """The alerts open on the day the numbering shipped show signals without a number (safety_0015 starts every
    term's count at 0). A-1's day-8 grade 4 is shown; both abnormal counts are taken back (another patient's samples)
    and A-1's own grade 3 drawn on day 7 is entered: safety raises it as news (number 1). Told by grades (3 <= 3,
    drawn before) it was history, the review-7 swallowed thrombocytopenia again for every term with an alert open at
    deploy; a numbered signal was raised after every unnumbered one of its term, so it pages."""
    before = lab_signals(safety.apply(platelets("P5", "30", 5)) + safety.apply(platelets("P8", "10", 8)))
    before = [s.model_copy(update={"data": s.data.model_copy(update={"sequence": None})}) for s in before]
    with Session(safety.engine) as session, session.begin():
        for state in session.exec(select(LabTermState)):
            state.signals_raised = 0  # the migration's default for terms signalled before it
    safety.apply(status("A-1", "lab", "P5"))
    safety.apply(status("A-1", "lab", "P8"))
    new = lab_signals(safety.apply(platelets("P7", "35", 7)))
    assert numbers(new) == [("P7", 3, 1)] and new[0].data.previous_grade is None
    to_notify(notifier, before + new)
    assert len(notifier.deliveries()) == 3
    assert shown(notifier)["result_id"] == "P7"


def test_vitals_findings_never_share_a_thread_with_numbered_lab_signals(safety: Driver, notifier: Notifier) -> None:
    """Vital signs grade Fever, Hypertension and Hypotension, unnumbered (`measured_by` 'vitals'); no lab test grades
    those terms, so a lab term's thread never mixes numbered and unnumbered signals. Within a vitals thread, the lane
    swap is told by grades: the grade 2 fever reaching notify first, the grade 1 raised before it is history."""
    lab_terms = {term for test in known_tests() for term in terms_for_test(test)}
    start = at(0, 9)
    safety.apply(dose("A-1", start))
    first = lab_signals(safety.apply(vitals("A-1", start + timedelta(minutes=30), temperature_c="38.0")))
    worse = lab_signals(safety.apply(vitals("A-1", start + timedelta(minutes=60), temperature_c="39.2")))
    low = lab_signals(safety.apply(vitals("A-1", start + timedelta(minutes=90), systolic_bp="84", diastolic_bp="50")))
    high = lab_signals(safety.apply(vitals("A-1", start + timedelta(minutes=120), systolic_bp="170")))
    signals = first + worse + low + high
    assert {s.data.term for s in signals} == {"Fever", "Hypotension", "Hypertension"}
    assert not {s.data.term for s in signals} & lab_terms
    assert all(s.data.measured_by == "vitals" and s.data.sequence is None for s in signals)
    to_notify(notifier, worse)
    to_notify(notifier, first, live=False)
    assert len(notifier.deliveries()) == 1 and shown(notifier)["grade"] == 2
