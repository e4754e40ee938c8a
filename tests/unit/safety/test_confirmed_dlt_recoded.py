"""A confirmed DLT whose AE the site recodes to another event (physician review 6, gap 1), from the protocol's side.

The committee confirmed a grade 3 drug pneumonitis (criterion 'non_haematological_grade3'). The site then recodes the
AE to 'Anemia' grade 3, which meets 'haematological' (no baseline Hb: taken as normal). A confirmation is of the event
reviewed: it must not carry over to an event no one adjudicated. The DLT is suspected again (review clock), the arm's
3+3 counts it as under review, and the committee is told why (`decided_dlt_data_changed`, the same finding family
and ids as 'no longer meets')."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from services.safety.dlt import Classification, DltSignal, DltState, transition
from services.safety.retracted_dlt import CONFIRMED_DLT_AE_RETRACTED
from shared.events import EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, dose, enrol, lab, of_type, status
from tests.unit.safety.test_batch_physician import deliver
from tests.unit.safety.test_clinical_rules import DAY0, at, cohort, related_ae
from tests.unit.safety.test_physician_review_4 import decide, record, three_in_a
from tests.unit.safety.test_physician_review_6 import findings


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def coded(version: int, term: str = "Pneumonitis", **data: Any) -> Any:
    """Subject A-1's AE-1 (onset day 9, grade 3, possibly related) as the site codes it in this version."""
    return related_ae("A-1", DAY0 + timedelta(days=9), version=version, term=term, **data)


def confirmed_then_recoded(driver: Driver) -> list[EnvelopeBase]:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    return driver.apply(coded(2, "Anemia"), now=at(14))


def test_the_recoded_dlt_is_suspected_again_and_the_arm_counts_it_as_under_review(driver: Driver) -> None:
    out = confirmed_then_recoded(driver)
    [suspected] = of_type(out, "dlt.suspected")
    assert (suspected.data.criterion, suspected.data.term) == ("haematological", "Anemia")
    [finding] = findings(out)
    for words in (
        "the term from 'Pneumonitis' to 'Anemia'",
        "meets DLT criterion 'haematological'",
        "not the criterion 'non_haematological_grade3' the confirmation judged",
        "was confirmed by olga on",
        "does not carry over to an event no one reviewed",
        "counts in arm A's 3+3 tally as under review, not as a confirmed DLT",
    ):
        assert words in finding.detail, words
    dlt = record(driver, "A-1")
    assert (dlt.state, dlt.divergence, dlt.decided_state, dlt.decided_criterion) == (
        "suspected",
        "other_event",
        "confirmed",
        "non_haematological_grade3",
    )
    arm = cohort(driver)
    assert (arm.dlt_confirmed, arm.dlt_suspected, arm.subjects_confirmed) == (0, 1, 0)


def test_the_recode_back_to_the_confirmed_term_restores_the_confirmation_and_says_so(driver: Driver) -> None:
    confirmed_then_recoded(driver)
    out = driver.apply(coded(3, "Pneumonitis"), now=at(15))
    [withdrawn] = of_type(out, "dlt.withdrawn")
    assert "the confirmation stands again" in withdrawn.data.reason
    [back] = findings(out)
    assert "meets DLT criterion 'non_haematological_grade3' again" in back.detail
    dlt = record(driver, "A-1")
    assert (dlt.state, dlt.divergence, dlt.criterion) == ("confirmed", None, "non_haematological_grade3")
    assert cohort(driver).dlt_confirmed == 1


def test_the_committee_confirming_the_recoded_event_ends_the_review_under_its_new_criterion(driver: Driver) -> None:
    confirmed_then_recoded(driver)
    decide(driver, "A-1", "confirmed", reason="SRC: grade 3 anaemia, CAR-T related", now=at(16))
    dlt = record(driver, "A-1")
    assert (dlt.state, dlt.decided_criterion, dlt.decided_term, dlt.divergence) == (
        "confirmed",
        "haematological",
        "Anemia",
        None,
    )
    assert cohort(driver).dlt_confirmed == 1
    assert findings(driver.apply(coded(3, "Anemia", grade=4), now=at(17))) == [], "the event confirmed, worse"


def test_the_committee_rejecting_the_recoded_event_takes_the_dlt_out_of_the_tally(driver: Driver) -> None:
    confirmed_then_recoded(driver)
    decide(driver, "A-1", "rejected", reason="SRC: anaemia of the underlying disease", now=at(16))
    assert record(driver, "A-1").state == "rejected"
    assert (cohort(driver).dlt_confirmed, cohort(driver).dlt_suspected) == (0, 0)


def test_a_recoded_event_that_meets_no_criterion_leaves_the_confirmation_standing_and_told(driver: Driver) -> None:
    """Recoded to anaemia (reopened), then the anaemia is judged not worse than a grade 3 screening Hb: the AE meets
    no criterion, as if recoded straight to it: the confirmation stands and the committee hears it no longer meets
    its criterion."""
    confirmed_then_recoded(driver)
    hb = dict(test="HGB", value="65", unit="g/L", lln="120", collected_at=at(-2), baseline=True)
    out = driver.apply(lab("A-1", result_id="HB0", **hb), now=at(15))
    assert of_type(out, "dlt.withdrawn")
    [finding] = findings(out)
    assert "no longer meets the DLT criterion 'non_haematological_grade3'" in finding.detail
    dlt = record(driver, "A-1")
    assert (dlt.state, dlt.divergence) == ("confirmed", "no_longer_meets")


def test_a_reopened_confirmation_taken_back_by_the_site_is_told_as_a_confirmed_dlt(driver: Driver) -> None:
    confirmed_then_recoded(driver)
    out = driver.apply(status("A-1", "ae", "AE-1"), now=at(15))
    assert CONFIRMED_DLT_AE_RETRACTED in [s.data.code for s in of_type(out, "data_quality.flagged")]
    assert of_type(out, "dlt.withdrawn"), "the review the recode opened is cancelled"
    assert record(driver, "A-1").state == "confirmed"


def test_a_recode_that_still_meets_the_confirmed_criterion_keeps_the_confirmation_and_tells_it(driver: Driver) -> None:
    """Confirmed as a grade 3 'Infusion related reaction' (unlikely: 'infusion_reaction_grade3' counts whatever the
    causality); recoded 'Cytokine release syndrome', possibly related: it now meets 'non_haematological_grade3'
    first, but still the criterion confirmed: the decision judged that criterion, nothing to reopen. But the DLT
    listing now names an event the committee never adjudicated (physician review 7): it is told the term change.
    (Until review 7 this test asserted that nothing was told.)"""
    three_in_a(driver)
    irr = related_ae("A-1", DAY0, term="Infusion related reaction", relatedness="unlikely")
    [suspected] = of_type(driver.apply(irr, now=at(0, 14)), "dlt.suspected")
    assert suspected.data.criterion == "infusion_reaction_grade3"
    decide(driver, "A-1", "confirmed", now=at(1))
    crs = related_ae("A-1", DAY0, version=2, term="Cytokine release syndrome", relatedness="possible")
    out = driver.apply(crs, now=at(2))
    assert not of_type(out, "dlt.suspected")
    [told] = findings(out)
    assert "the term from 'Infusion related reaction' to 'Cytokine release syndrome'" in told.detail
    assert "still meets the criterion 'infusion_reaction_grade3' it was confirmed under" in told.detail
    assert (record(driver, "A-1").state, record(driver, "A-1").divergence) == ("confirmed", "recoded")


def test_the_same_recode_redelivered_raises_nothing_twice(driver: Driver) -> None:
    first = confirmed_then_recoded(driver)
    assert len(findings(first)) == 1
    again = driver.apply(coded(2, "Anemia"), now=at(14, 12))
    assert again == []
    later = driver.apply(related_ae("A-2", DAY0 + timedelta(days=3), ae_id="AE-9", grade=1), now=at(15))
    assert findings(later) == [], "another subject's event tells nothing about A-1's DLT"


@pytest.mark.parametrize("batched", [False, True])
def test_the_recode_and_its_correction_end_in_one_state_in_either_order(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    """v2 'Anemia' and v3 'Pneumonitis' (the site's last word) in either order, one by one or in one batch: the
    confirmation stands, counted once, nothing diverging."""
    base = [enrol("A-1", "A", DAY0), dose("A-1", at(0)), coded(1)]
    stored = set()
    for n, order in enumerate(itertools.permutations([coded(2, "Anemia"), coded(3, "Pneumonitis")])):
        steps = [base, lambda d: decide(d, "A-1", "confirmed", now=at(11)), list(order)]
        run = deliver(tmp_path, protocol, f"recode-{batched}-{n}", steps, batched=batched, now=at(12))
        dlt = record(run.driver, "A-1")
        stored.add((dlt.state, dlt.criterion, dlt.divergence, dlt.decided_state))
    assert stored == {("confirmed", "non_haematological_grade3", None, "confirmed")}


def test_the_pure_transition_reopens_a_confirmation_only_for_another_event_of_another_criterion() -> None:
    anaemia = Classification(True, "haematological", "meets", ("haematological",))
    both = Classification(True, "non_haematological_grade3", "meets", ("non_haematological_grade3", "grade5"))
    kw: dict[str, Any] = {"grade": 3, "decided_grade": 3, "confirmed": True}
    reopened = transition(
        DltState.CONFIRMED, anaemia, decided_criterion="non_haematological_grade3", other_event=True, **kw
    )
    assert (reopened.state, reopened.signal) == (DltState.SUSPECTED, DltSignal.SUSPECTED)
    same_event = transition(DltState.CONFIRMED, anaemia, decided_criterion="non_haematological_grade3", **kw)
    assert (same_event.state, same_event.signal) == (DltState.CONFIRMED, None), "a worse grade 5: the same event"
    still = transition(DltState.CONFIRMED, both, decided_criterion="grade5", other_event=True, **kw)
    assert (still.state, still.signal) == (DltState.CONFIRMED, None)
    legacy = transition(DltState.CONFIRMED, anaemia, decided_criterion=None, other_event=True, **kw)
    assert legacy.state is DltState.CONFIRMED, "no criterion kept: nothing to compare, the confirmation stands"
    back = transition(DltState.SUSPECTED, both, decided_criterion="non_haematological_grade3", other_event=False, **kw)
    assert (back.state, back.signal) == (DltState.CONFIRMED, DltSignal.WITHDRAWN)
