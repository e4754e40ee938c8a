"""A safety physician (review 7) tries to break the lab pages of the day from a safety officer's view: a lab toxicity
raised by a result that came on its own takes the urgent lane and pages as a live finding (above other pages, below
an SAE's), and notify keeps a lab thread's
worse finding shown when a signal safety raised earlier arrives late by the other lane (`lab_alerts.raised_before`).
Can a real worsening now be swallowed as 'raised before'? Could a page that is not an SAE's now outrank one? The lab
signals are the ones safety raises (tests.unit.safety.clinical.Driver), applied to notify in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from services.notify import urgency
from services.notify.models import Alert, Delivery
from services.notify.signals import apply_signal
from shared.db import make_engine
from shared.events import EnvelopeBase, LabToxicity
from shared.lanes import is_backfill, signal_topic
from shared.protocol import Protocol
from tests.signal_factories import sae_detected
from tests.unit.notify.conftest import Notifier
from tests.unit.safety.clinical import Driver, lab, of_type, status
from tests.unit.safety.test_clinical_rules import at, subject_in

SIGNALS = "sentinel.signals.v1"


@pytest.fixture
def safety(tmp_path: Path, protocol: Protocol) -> Driver:
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/safety.db"), protocol)
    subject_in(driver, "A-1", "A", visit=False)
    return driver


def platelets(rid: str, value: str, day: int, *, baseline: bool = False) -> Any:
    """A-1's platelet count (10^9/L; CTCAE v5.0: < 75 grade 2, < 50 grade 3, < 25 grade 4)."""
    return lab("A-1", result_id=rid, test="PLAT", value=value, lln="150", collected_at=at(day), baseline=baseline)


def lab_signals(out: list[EnvelopeBase]) -> list[LabToxicity]:
    return list(of_type(out, "lab.toxicity"))


def to_notify(notifier: Notifier, signals: list[LabToxicity], *, live: bool = True) -> None:
    for signal in signals:
        with Session(notifier.engine) as session, session.begin():
            apply_signal(session, signal, notifier.clock.now(), protocol=notifier.protocol, live=live)


def shown(notifier: Notifier) -> dict[str, Any]:
    [alert] = notifier.rows(Alert)
    return dict(alert.details)


def test_signals_raised_in_order_each_page_the_worse_grade(safety: Driver, notifier: Notifier) -> None:
    """Baseline grade 2 platelets (60), day 5 grade 3 (30), day 8 grade 4 (10): each is news and pages, in order."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    g3 = lab_signals(safety.apply(platelets("P5", "30", 5)))
    g4 = lab_signals(safety.apply(platelets("P8", "10", 8)))
    assert [(s.data.grade, s.data.previous_grade) for s in g3 + g4] == [(3, None), (4, 3)]
    to_notify(notifier, g3 + g4)
    assert shown(notifier)["result_id"] == "P8"
    assert len(notifier.deliveries()) == 2


def test_the_grade_3_raised_first_arriving_after_the_grade_4_is_history(safety: Driver, notifier: Notifier) -> None:
    """The lane swap the rule is for: the grade 4 (live) reaches notify before the grade 3 a backfill brought."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    g3 = lab_signals(safety.apply(platelets("P5", "30", 5)))
    g4 = lab_signals(safety.apply(platelets("P8", "10", 8)))
    to_notify(notifier, g4)
    to_notify(notifier, g3, live=False)
    assert shown(notifier)["result_id"] == "P8" and len(notifier.deliveries()) == 1


def test_a_corrected_count_that_comes_back_worse_pages_again(safety: Driver, notifier: Notifier) -> None:
    """Day 8's 10 (grade 4) is corrected to 30 (grade 3, a clumped sample), then the lab corrects it back to 10 (the
    repeat count confirmed it): safety raises grade 4 again (previous grade 3), and notify pages it, not swallows."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    out = safety.apply(platelets("P5", "30", 5)) + safety.apply(platelets("P8", "10", 8))
    out += safety.apply(platelets("P8", "30", 8).model_copy(update={"id": "P8-corrected-down"}))
    out += safety.apply(platelets("P8", "10", 8).model_copy(update={"id": "P8-corrected-back"}))
    signals = lab_signals(out)
    assert [s.data.grade for s in signals] == [3, 4, 4]
    to_notify(notifier, signals)
    assert len(notifier.deliveries()) == 3, "the confirmed grade 4 re-pages"


def test_a_new_grade_3_after_the_worse_results_were_taken_back_pages(safety: Driver, notifier: Notifier) -> None:
    """Both of A-1's abnormal platelet counts (grade 3 then grade 4) are taken back (another patient's samples: a
    labelling error); safety raises A-1's own next grade 3 count as news (previous grade None). Notify compared it
    with the alert still showing the retracted grade 4 (previous grade 3) and recorded it as 'raised before the
    finding shown': no page, no new review, a real grade 3 thrombocytopenia swallowed. Fixed in
    lab_alerts.raised_before: a result drawn after the one shown is never taken for history."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    out = safety.apply(platelets("P5", "30", 5)) + safety.apply(platelets("P8", "10", 8))
    out += safety.apply(status("A-1", "lab", "P5")) + safety.apply(status("A-1", "lab", "P8"))
    new = lab_signals(safety.apply(platelets("P12", "35", 12)))
    assert [(s.data.grade, s.data.previous_grade) for s in new] == [(3, None)], "safety raises it"
    to_notify(notifier, lab_signals(out))
    to_notify(notifier, new)
    assert shown(notifier)["result_id"] == "P12"
    assert len(notifier.deliveries()) == 3


def test_an_earlier_drawn_grade_3_entered_after_the_worse_results_were_taken_back_pages(
    safety: Driver, notifier: Notifier
) -> None:
    """Both abnormal counts taken back (another patient's samples), then A-1's own grade 3 count drawn on day 7
    (before the retracted day-8 grade 4 the alert still shows) is entered late. Safety raises it as news; notify took
    it for a late lane-swapped signal (no worse than the shown one's previous grade, drawn before it) and recorded it
    without a page or a review: notify cannot tell a retraction from a lane swap by grades. Fixed: safety numbers a
    term's signals in the order it raised them (`LabToxicityData.sequence`), and a higher number is news."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    out = safety.apply(platelets("P5", "30", 5)) + safety.apply(platelets("P8", "10", 8))
    out += safety.apply(status("A-1", "lab", "P5")) + safety.apply(status("A-1", "lab", "P8"))
    new = lab_signals(safety.apply(platelets("P7", "35", 7)))
    assert [(s.data.grade, s.data.previous_grade) for s in new] == [(3, None)], "safety raises it"
    assert [s.data.sequence for s in lab_signals(out) + new] == [1, 2, 3]
    to_notify(notifier, lab_signals(out))
    to_notify(notifier, new)
    assert len(notifier.deliveries()) == 3
    assert shown(notifier)["result_id"] == "P7"


def test_the_earlier_drawn_grade_3_is_still_news_when_its_lane_brings_it_before_the_grade_4(
    safety: Driver, notifier: Notifier
) -> None:
    """The same case with the lanes swapped the other way: the grade 3 raised before the retractions (P5) arrives
    last, after the new day-7 grade 3. It is history (a lower number, drawn before the one shown) and pages nobody;
    the day-7 count paged."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    g3 = lab_signals(safety.apply(platelets("P5", "30", 5)))
    g4 = lab_signals(safety.apply(platelets("P8", "10", 8)))
    safety.apply(status("A-1", "lab", "P5"))
    safety.apply(status("A-1", "lab", "P8"))
    new = lab_signals(safety.apply(platelets("P7", "35", 7)))
    to_notify(notifier, g4 + new)
    to_notify(notifier, g3, live=False)
    assert len(notifier.deliveries()) == 2
    assert shown(notifier)["result_id"] == "P7"


def test_a_signal_without_a_number_is_still_told_by_its_grades(notifier: Notifier) -> None:
    """Signals from a producer before the numbering (or from vital signs) parse, and the grade rule still applies:
    between two unnumbered signals, and for an unnumbered one against a numbered alert (raised before the numbering)."""
    now = datetime(2026, 3, 9, 10, tzinfo=UTC)
    worse = creatinine(4, "C2", previous=3, floor=False, at=now)
    earlier = creatinine(3, "C1", previous=None, floor=False, at=now)
    assert (worse.data.sequence, earlier.data.sequence) == (None, None)
    to_notify(notifier, [worse])
    to_notify(notifier, [earlier])
    assert len(notifier.deliveries()) == 1, "both unnumbered: by grades, the grade 3 came first"


def test_an_unnumbered_signal_arriving_late_against_a_numbered_alert_is_told_by_its_grades(notifier: Notifier) -> None:
    now = datetime(2026, 3, 9, 10, tzinfo=UTC)
    worse = creatinine(4, "C2", previous=3, floor=False, at=now)
    numbered = worse.model_copy(update={"data": worse.data.model_copy(update={"sequence": 1})})
    to_notify(notifier, [numbered])
    to_notify(notifier, [creatinine(3, "C1", previous=None, floor=False, at=now)])
    assert len(notifier.deliveries()) == 1


def test_a_numbered_signal_against_an_unnumbered_alert_is_news(notifier: Notifier) -> None:
    """The alert opened before the numbering shipped; safety numbers every lab signal since, so a numbered one was
    raised after it: news, even no worse than the shown one's previous grade (see review 8's deploy-day case)."""
    now = datetime(2026, 3, 9, 10, tzinfo=UTC)
    to_notify(notifier, [creatinine(4, "C2", previous=3, floor=False, at=now)])
    later = creatinine(3, "C3", previous=None, floor=False, at=now)
    to_notify(notifier, [later.model_copy(update={"data": later.data.model_copy(update={"sequence": 1})})])
    assert len(notifier.deliveries()) == 2


def test_a_backfills_newer_better_count_arriving_late_pages_once_more_the_safe_way(
    safety: Driver, notifier: Notifier
) -> None:
    """The trade-off of that fix: the backfill brings a grade 3 drawn on day 9, safety raises it first, then a grade 4
    drawn on day 8 that a site entered on its own (previous grade 3) reaches notify first. The grade 3 (drawn later)
    cannot be told from a new episode by grades alone: it pages once more (noise, not a swallowed worsening), and the
    alert shows the latest count drawn, the grade 4 kept in its history (it was paged CRITICAL seconds before)."""
    safety.apply(platelets("P0", "60", -2, baseline=True))
    g3 = lab_signals(safety.apply(platelets("P9", "30", 9)))
    g4 = lab_signals(safety.apply(platelets("P8", "10", 8)))
    to_notify(notifier, g4)
    to_notify(notifier, g3, live=False)
    assert len(notifier.deliveries()) == 2
    assert shown(notifier)["result_id"] == "P9"
    assert [h.action for h in notifier.history()] == ["opened", "worsened"]
    assert "grade 4" in notifier.history()[0].detail


def test_a_floor_grade_raised_first_and_arriving_late_does_not_hide_the_worse_one(notifier: Notifier) -> None:
    """'At least grade 3' (a creatinine with no ULN) raised first, a grade 4 after it (previous 3): the floor signal
    arriving late is history; the shown grade 4 stays and nobody is paged twice."""
    now = datetime(2026, 3, 9, 10, tzinfo=UTC)
    floor = creatinine(3, "C1", previous=None, floor=True, at=now)
    worse = creatinine(4, "C2", previous=3, floor=False, at=now)
    to_notify(notifier, [worse])
    to_notify(notifier, [floor], live=False)
    assert shown(notifier)["result_id"] == "C2" and len(notifier.deliveries()) == 1


def creatinine(grade: int, rid: str, *, previous: int | None, floor: bool, at: datetime) -> LabToxicity:
    from shared.events import LabToxicityData

    return LabToxicity(
        id=f"sig-{rid}",
        source="/services/safety",
        subject="A-1",
        time=at,
        trialid="NCT07212335",
        data=LabToxicityData(
            site_id="SITE-1",
            subject_id="A-1",
            result_id=rid,
            test="CREAT",
            term="Creatinine increased",
            grade=grade,
            baseline_grade=0,
            previous_grade=previous,
            value="400",
            unit="umol/L",
            reason="graded",
            collected_at=at - timedelta(hours=1),
            source_event_id=f"src-{rid}",
            floor=floor,
        ),
    )


def test_a_backfills_lab_page_never_outranks_an_sae(notifier: Notifier) -> None:
    """A backfill's lab toxicity (routine lane, not live) is a PAGE; an SAE's first page is CRITICAL."""
    now = notifier.clock.now()
    to_notify(notifier, [creatinine(3, "C1", previous=None, floor=False, at=now)], live=False)
    notifier.apply(sae_detected("A-2", aware=now, source_event_id="src-sae"))
    kinds = {a.id: a.kind for a in notifier.rows(Alert)}
    classes = {kinds[d.alert_id]: d.urgency for d in notifier.rows(Delivery)}
    assert classes["lab_toxicity"] > classes["sae"] == urgency.CRITICAL


def test_an_sae_outranks_a_live_lab_page(notifier: Notifier) -> None:
    """A central lab's import of 400 results in one request (below the 500-event backfill threshold) comes on the urgent
    clinical topic: every lab toxicity it raises is live. Were their pages CRITICAL, an SAE queued a second later would
    wait behind them (within a class, oldest first). They are LIVE_FINDINGs: above a backfill's PAGEs, below an SAE."""
    now = notifier.clock.now()
    to_notify(notifier, [creatinine(3, "C1", previous=None, floor=False, at=now)], live=True)
    notifier.apply(sae_detected("A-2", aware=now, source_event_id="src-sae"))
    kinds = {a.id: a.kind for a in notifier.rows(Alert)}
    classes = {kinds[d.alert_id]: d.urgency for d in notifier.rows(Delivery)}
    assert classes["sae"] < classes["lab_toxicity"] == urgency.LIVE_FINDING < urgency.PAGE


def test_a_four_hundred_result_import_is_live_not_a_backfill(safety: Driver) -> None:
    """A FHIR Bundle or ODM file of 400 results (a central lab's nightly interface) is not a backfill (more than 500
    events, or the SDTM / REDCap reconciliation routes, are): its lab toxicities take the signals topic."""
    assert is_backfill(events=400, backfill_route=False) is False
    assert is_backfill(events=501, backfill_route=False) is True
    out = safety.apply(platelets("P0", "60", -2, baseline=True)) + safety.apply(platelets("P5", "10", 5))
    [signal] = lab_signals(out)
    assert signal_topic(SIGNALS, signal, live=True) == SIGNALS
    assert signal_topic(SIGNALS, signal, live=False) == SIGNALS + ".routine"
