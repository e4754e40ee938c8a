"""A safety physician (review 9) tries to break the withdrawal of a lab finding that no longer stands
(`lab.toxicity_withdrawn`: safety's `_reassess_lab_term`; notify's `lab_withdrawal_signals`,
`lab_alerts.withdrawn_before` and `raised_before`) with what sites, central labs and EDCs do to the counts of
NCT07212335's subjects, who enter with grade 3-4 cytopenias after CAR-T: a screening count entered late or taken
back, a grade 4 corrected to grade 3 while the review is acknowledged or after it was completed, a retraction then a
restore or a re-entry, two results of a term, a unit-only correction, floor grades, vital signs, one consumer batch,
and the lanes swapped. Does anything still escalate for a result taken back, or stop escalating while a grade at or
above the threshold stands? The signals are the ones safety raises (tests.unit.safety.clinical.Driver), applied to
notify in the order given."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from services.notify.models import Alert, Delivery, Obligation
from services.notify.signals import apply_signal
from services.safety.clinical_events import open_batch
from shared.db import make_engine
from shared.events import EnvelopeBase, LabResulted
from shared.protocol import Protocol
from tests.unit.notify.conftest import Notifier, act
from tests.unit.notify.test_physician_review_7 import platelets
from tests.unit.safety.clinical import SIGNALS, Driver, dose, lab, of_type, status, vitals
from tests.unit.safety.test_clinical_rules import at, subject_in

OFFICER = "safety.officer@sentinel.example"
PLT = "Platelet count decreased"


@pytest.fixture
def safety(tmp_path: Path, protocol: Protocol) -> Driver:
    """A-1, enrolled and infused; no screening count on file yet (each test enters the one it needs)."""
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/safety.db"), protocol)
    subject_in(driver, "A-1", "A", visit=False)
    return driver


def findings(out: list[EnvelopeBase]) -> list[Any]:
    """What safety raised about labs and vitals: findings and withdrawals, in order."""
    return [s for s in out if getattr(s, "type", None) in ("lab.toxicity", "lab.toxicity_withdrawn")]


def withdrawals(out: list[EnvelopeBase]) -> list[Any]:
    return list(of_type(out, "lab.toxicity_withdrawn"))


def send(notifier: Notifier, signals: list[Any], *, live: bool = True) -> None:
    for signal in signals:
        with Session(notifier.engine) as session, session.begin():
            apply_signal(session, signal, notifier.clock.now(), protocol=notifier.protocol, live=live)


def corrected(envelope: LabResulted, value: str, *, unit: str | None = None, tag: str = "corr") -> LabResulted:
    """The site's correction of a result: the same result id, another delivery."""
    data = envelope.data.model_copy(update={"value": value} | ({"unit": unit} if unit else {}))
    return envelope.model_copy(update={"id": f"{envelope.id}-{tag}", "data": data})


def neut(rid: str, value: str, day: int) -> LabResulted:
    """A-1's ANC (10^9/L; CTCAE v5.0: < 1.0 grade 3, < 0.5 grade 4)."""
    return lab("A-1", result_id=rid, test="NEUT", value=value, lln="2.0", collected_at=at(day))


def alt(rid: str, value: str, day: int, *, baseline: bool = False) -> LabResulted:
    envelope = lab("A-1", result_id=rid, test="ALT", value=value, collected_at=at(day), unit="U/L", baseline=baseline)
    data = envelope.data.model_copy(update={"lln": 7, "uln": 40})
    return envelope.model_copy(update={"data": data})


def alert(notifier: Notifier) -> Alert:
    row: Alert = notifier.only(Alert)
    return row


def reviews(notifier: Notifier) -> list[str]:
    return sorted(o.state for o in notifier.rows(Obligation))


def mails_to_officer(notifier: Notifier) -> list[Delivery]:
    return [d for d in notifier.deliveries() if d.recipient == OFFICER]


def hand_over(notifier: Notifier) -> None:
    """The mail server took every page queued so far."""
    with Session(notifier.engine) as session, session.begin():
        for row in session.exec(select(Delivery)).all():
            if row.status == "pending":
                row.status = "sent"


def test_a_screening_count_taken_back_that_masked_nothing_changes_nothing(safety: Driver, notifier: Notifier) -> None:
    """Screening platelets 60 (grade 2) then day-5 30 (grade 3) pages. The screening count is taken back (entered
    under the wrong visit): the day-5 grade 3 was worse than it anyway, so nothing is withdrawn and the review
    stays open with its clocks."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    out = findings(safety.apply(platelets("P5", "30", 5)))
    assert findings(safety.apply(status("A-1", "lab", "P0"))) == []
    send(notifier, out)
    assert reviews(notifier) == ["open"] and notifier.pending(), "the grade 3 review keeps its clocks"


def test_a_late_screening_count_at_the_same_grade_withdraws_the_finding(safety: Driver, notifier: Notifier) -> None:
    """Day-5 platelets 30 (grade 3) pages; the site then enters the screening count, 35 (grade 3: the subject
    entered with grade 3 thrombocytopenia). Had it come first the day-5 count would not have paged (no worse than
    baseline): the finding no longer stands, and its review must be cancelled (README: 'graded again below it
    against a baseline entered later')."""
    page = findings(safety.apply(platelets("P5", "30", 5)))
    late = withdrawals(safety.apply(platelets("P0", "35", -2, baseline=True)))
    send(notifier, page)
    hand_over(notifier)
    send(notifier, late)
    assert [w.data.standing_grade for w in late] == [None]
    assert reviews(notifier) == ["cancelled"] and notifier.pending() == []


def test_a_late_baseline_that_withdrew_a_finding_then_taken_back_pages_it_again(
    safety: Driver, notifier: Notifier
) -> None:
    """ALT 260 U/L (6.5 x ULN, grade 3) pages; a screening ALT of 100 is entered later (260 is then 2.6 x baseline,
    grade 1) and the finding is withdrawn. The screening ALT turns out to be another patient's and is taken back:
    the day-5 ALT is grade 3 again and must page with a fresh review."""
    out = findings(safety.apply(alt("ALT-5", "260", 5)))
    out += findings(safety.apply(alt("ALT-0", "100", -2, baseline=True)))
    assert [s.type for s in out] == ["lab.toxicity", "lab.toxicity_withdrawn"]
    again = findings(safety.apply(status("A-1", "lab", "ALT-0")))
    assert [(s.type, s.data.grade) for s in again] == [("lab.toxicity", 3)]
    send(notifier, out + again)
    assert reviews(notifier) == ["cancelled", "open"]


async def test_a_grade_4_corrected_to_grade_3_while_acknowledged_keeps_the_review_and_its_deadline(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4) pages at night; the officer acknowledges it. The lab corrects the count to 30
    (grade 3, a clumped sample): grade 3 is still at the threshold, so the review stays acknowledged and open, no page
    goes out for a better result, and the review still falls overdue if nobody completes it."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    g4 = findings(safety.apply(platelets("P8", "10", 8)))
    send(notifier, g4)
    await notifier.at(notifier.clock.now() + timedelta(minutes=1))
    act(notifier, "acknowledge", actor=OFFICER)
    out = withdrawals(safety.apply(corrected(platelets("P8", "10", 8), "30")))
    assert [(w.data.withdrawn_grade, w.data.standing_grade) for w in out] == [(4, 3)]
    sent = len(notifier.channel.sent)
    send(notifier, out)
    row = alert(notifier)
    assert row.state == "acknowledged" and row.title.startswith(f"{PLT} grade 3 (grade 4 no longer stands)")
    assert reviews(notifier) == ["open"]
    assert await notifier.at(notifier.clock.now() + timedelta(hours=2)) == [], "no page for a better count"
    assert len(notifier.channel.sent) == sent
    [due] = [t.due_at for t in notifier.pending() if t.kind == "overdue"]
    overdue = await notifier.at(due + timedelta(minutes=1))
    assert any(to == OFFICER and "OVERDUE" in subject and f"{PLT} grade 3" in subject for to, subject in overdue), (
        "a grade 3 thrombocytopenia still owes its review: it falls overdue, naming the grade that stands"
    )


def test_a_finding_withdrawn_after_the_review_was_completed_tells_the_officer_once(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4) pages; the officer completes the review (assessed as related, platelet transfusion
    threshold discussed with the site). Two days later the site marks the count entered in error: nothing stands.
    The officer's review recorded an assessment of a value that no longer exists; they must hear it once (to revise
    the AE and any DLT assessment), and no review is reopened."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    hand_over(notifier)
    act(notifier, "complete", actor=OFFICER, reference=None)
    before = len(mails_to_officer(notifier))
    send(notifier, withdrawals(safety.apply(status("A-1", "lab", "P8"))))
    assert reviews(notifier) == ["completed"]
    assert "no longer stands" in alert(notifier).title
    assert len(mails_to_officer(notifier)) == before + 1


def test_a_retraction_then_a_restore_pages_again_with_a_fresh_review(safety: Driver, notifier: Notifier) -> None:
    """Day-8 grade 4 pages; the site takes it back (thought mislabelled): the review is cancelled and the officer told.
    The site restores it (it was A-1's): a grade 4 thrombocytopenia pages again with a new open review."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    send(notifier, findings(safety.apply(platelets("P8", "10", 8))))
    hand_over(notifier)
    send(notifier, findings(safety.apply(status("A-1", "lab", "P8"))))
    assert reviews(notifier) == ["cancelled"] and notifier.pending() == []
    restored = findings(safety.apply(status("A-1", "lab", "P8", "restored")))
    assert [(s.type, s.data.grade) for s in restored] == [("lab.toxicity", 4)]
    send(notifier, restored)
    assert reviews(notifier) == ["cancelled", "open"] and alert(notifier).state == "open"
    assert "no longer stands" not in alert(notifier).title and notifier.pending()
    assert len(mails_to_officer(notifier)) == 3, "page, withdrawal notice, page again"


def test_a_restore_whose_page_overtakes_the_withdrawal_keeps_the_review(safety: Driver, notifier: Notifier) -> None:
    """The same, lanes swapped: the restore (live, signals topic) reaches notify before the withdrawal (always the
    routine lane). The late withdrawal is history: the restored grade 4 keeps its open review and escalation."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    page = findings(safety.apply(platelets("P8", "10", 8)))
    withdrawal = findings(safety.apply(status("A-1", "lab", "P8")))
    restored = findings(safety.apply(status("A-1", "lab", "P8", "restored")))
    send(notifier, page + restored)
    send(notifier, withdrawal, live=False)
    assert reviews(notifier) == ["open"] and notifier.pending()
    assert "no longer stands" not in alert(notifier).title
    assert notifier.history()[-1].action == "flagged_again"


def test_retracting_the_older_of_two_results_when_the_worse_stands_changes_nothing(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-5 grade 3 and day-8 grade 4 page; the day-5 count is taken back (drawn from the line being flushed): the
    grade 4 still stands, so nothing is withdrawn and its review stays open."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    out = findings(safety.apply(platelets("P5", "30", 5)) + safety.apply(platelets("P8", "10", 8)))
    assert findings(safety.apply(status("A-1", "lab", "P5"))) == []
    send(notifier, out)
    assert reviews(notifier) == ["open"] and alert(notifier).details["result_id"] == "P8"


def test_retracting_the_paged_grade_4_when_another_grade_4_stands_names_the_one_that_stands(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4) pages; day-9 15 (grade 4, not news) follows. Day 8's is taken back (another
    patient's tube): grade 4 still stands, by day 9's count. The review stays; but the officer reviewing at 3 a.m.
    must see the count that stands (P9), not a count the site has taken back."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    out = findings(safety.apply(platelets("P8", "10", 8)) + safety.apply(platelets("P9", "15", 9)))
    out += findings(safety.apply(status("A-1", "lab", "P8")))
    send(notifier, out)
    assert reviews(notifier) == ["open"]
    details = alert(notifier).details
    assert "P9" in (details.get("result_id"), details.get("standing_result_id"))


def test_a_correction_of_the_unit_only_withdraws_nothing(safety: Driver, notifier: Notifier) -> None:
    """The central lab re-sends day-8 platelets 10 with its unit written 10^3/uL instead of 10^9/L (the same
    quantity): still grade 4; nothing is withdrawn, nothing pages again, the review stays."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    page = findings(safety.apply(platelets("P8", "10", 8)))
    again = findings(safety.apply(corrected(platelets("P8", "10", 8), "10", unit="10^3/uL")))
    assert again == []
    send(notifier, page + again)
    assert reviews(notifier) == ["open"] and len(notifier.deliveries()) == 1


def test_a_floor_grade_corrected_to_the_same_grade_or_to_normal(safety: Driver, notifier: Notifier) -> None:
    """ANC '<1.0' is 'at least grade 3' and pages. The lab's exact value 0.8 (grade 3) pages nobody and keeps the
    review, but the alert now shows 0.8 (review 10: a result corrected within its grade is revised where shown; this
    test once asserted the exact value raised nothing, which left '<1.0' on the alert). Then the site corrects it to
    1.6 (grade 2, a diluted specimen re-run): nothing stands, the review is cancelled and the officer told once."""
    page = findings(safety.apply(neut("N-1", "<1.0", 6)))
    assert [(s.data.grade, s.data.floor) for s in page] == [(3, True)]
    exact = findings(safety.apply(corrected(neut("N-1", "<1.0", 6), "0.8")))
    assert [(s.type, s.data.withdrawn_grade, s.data.standing_grade, s.data.withdrawn_result_id) for s in exact] == [
        ("lab.toxicity_withdrawn", 3, 3, "N-1")
    ], "a revision of N-1, not a page"
    out = findings(safety.apply(corrected(neut("N-1", "<1.0", 6), "1.6", tag="rerun")))
    assert [(s.type, s.data.withdrawn_grade, s.data.standing_grade) for s in out] == [
        ("lab.toxicity_withdrawn", 3, None)
    ]
    send(notifier, page)
    hand_over(notifier)
    send(notifier, exact)
    assert reviews(notifier) == ["open"] and len(mails_to_officer(notifier)) == 1, "the exact value pages nobody"
    assert (alert(notifier).details["value"], alert(notifier).details["floor"]) == ("0.8", False)
    assert "grade 3" in alert(notifier).title and "at least" not in alert(notifier).title, "0.8 is exactly grade 3"
    send(notifier, out)
    assert reviews(notifier) == ["cancelled"] and notifier.pending() == []
    assert len(mails_to_officer(notifier)) == 2


def test_a_fever_corrected_to_normal_cancels_its_review(safety: Driver, notifier: Notifier) -> None:
    """30 minutes into the infusion a temperature of 39.2 C (grade 2 fever) is entered: it pages. The nurse corrects
    the typo to 37.2 C (same vitals set): no fever stands, its review must not keep escalating."""
    start = at(0, 9)
    safety.apply(dose("A-1", start))
    fever = findings(safety.apply(vitals("A-1", start + timedelta(minutes=30), vitals_id="VS-1", temperature_c="39.2")))
    assert [(s.data.term, s.data.grade) for s in fever] == [("Fever", 2)]
    fixed = findings(safety.apply(vitals("A-1", start + timedelta(minutes=30), vitals_id="VS-1", temperature_c="37.2")))
    send(notifier, fever)
    hand_over(notifier)
    send(notifier, fixed)
    assert reviews(notifier) == ["cancelled"]


def test_a_retracted_count_re_entered_under_a_new_id_pages_once_more_whatever_the_lane(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-8 platelets 10 (grade 4) pages; the EDC cannot edit it, so the site marks it entered in error and
    re-enters the same count as P8b. The re-entry (live) reaches notify before the withdrawal (routine lane): the
    re-entered grade 4 keeps an open review, the late withdrawal is history and cancels nothing."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    page = findings(safety.apply(platelets("P8", "10", 8)))
    withdrawal = findings(safety.apply(status("A-1", "lab", "P8")))
    again = findings(safety.apply(platelets("P8b", "10", 8)))
    assert [s.data.sequence for s in page + withdrawal + again] == [1, 1, 2]
    send(notifier, page + again)
    send(notifier, withdrawal, live=False)
    assert reviews(notifier) == ["open"] and alert(notifier).details["result_id"] == "P8b"
    assert notifier.pending(), "the re-entered grade 4 escalates until reviewed"


def test_one_consumer_batch_raises_what_one_event_at_a_time_does(
    safety: Driver, notifier: Notifier, protocol: Protocol
) -> None:
    """The EDC pushes the retraction of P8 and its re-entry P8b in one delivery, consumed as one batch
    (`open_batch`): the same withdrawal and finding, numbered alike, as event by event; notify ends with one open
    review of P8b."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    page = findings(safety.apply(platelets("P8", "10", 8)))
    events = [status("A-1", "lab", "P8"), platelets("P8b", "10", 8)]
    with Session(safety.engine) as session, session.begin():
        batch = open_batch(protocol, SIGNALS)(session, at(9), events)
        out = [o.envelope for event in events for o in batch.apply(event)]
    batched = findings(out)
    assert [(s.type, s.data.sequence) for s in batched] == [("lab.toxicity_withdrawn", 1), ("lab.toxicity", 2)]
    send(notifier, page)
    hand_over(notifier)
    send(notifier, batched)
    assert reviews(notifier) == ["cancelled", "open"] and alert(notifier).details["result_id"] == "P8b"


def test_a_withdrawal_that_overtook_a_later_drawn_grade_4_keeps_it_from_paging(
    safety: Driver, notifier: Notifier
) -> None:
    """Day-5 platelets 30 (grade 3) is shown. Day-8 10 (grade 4, live) is corrected within minutes to 30 (clumped
    sample): safety withdraws it, grade 3 standing. The withdrawal (routine lane) reaches notify before the grade 4
    (still on the signals topic): the grade 4, drawn after the day-5 count but covered by the withdrawal, must be
    history, with no page and the alert still showing grade 3."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    g3 = findings(safety.apply(platelets("P5", "30", 5)))
    g4 = findings(safety.apply(platelets("P8", "10", 8)))
    withdrawal = findings(safety.apply(corrected(platelets("P8", "10", 8), "30")))
    assert [(s.type, s.data.sequence) for s in g3 + g4 + withdrawal] == [
        ("lab.toxicity", 1),
        ("lab.toxicity", 2),
        ("lab.toxicity_withdrawn", 2),
    ]
    send(notifier, g3)
    send(notifier, withdrawal, live=False)
    send(notifier, g4)
    assert len(notifier.deliveries()) == 1, "no page for a grade 4 already corrected"
    assert alert(notifier).title.startswith(f"{PLT} grade 3")
