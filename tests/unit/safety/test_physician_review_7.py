"""A safety physician (review 7) tries to break three features of the day with cases from NCT07212335 (the shipped
protocol) and from sites' real practice: a committee-confirmed DLT whose AE the site recodes (`dlt.transition`,
`dlt_decision_basis`), and the SAE / SUSAR clocks a re-entered serious AE keeps (`sae_reentry`, `reentry_links`,
`expedited.cases`). A case the system gets right passes; one it gets wrong is a strict xfail whose reason says the
clinical divergence and why it matters."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from services.safety.models import SusarCase
from services.safety.sae_retraction import SAE_REPLACED_BY_AMBIGUOUS
from shared.events import EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, ae, of_type
from tests.unit.safety.test_clinical_rules import DAY0, TRIAL, at, cohort, related_ae, subject_in, sweep
from tests.unit.safety.test_physician_review_3 import dosed, reaction, site_status
from tests.unit.safety.test_physician_review_4 import decide, record, three_in_a
from tests.unit.safety.test_physician_review_6 import (
    explicit_retraction,
    febrile_neutropenia,
    findings,
    reentry_findings,
    sae_signals,
)


@pytest.fixture
def driver(tmp_path: Path, protocol: Protocol) -> Driver:
    from shared.db import make_engine

    return Driver(make_engine(f"sqlite:///{tmp_path}/review7.db"), protocol)


def recoded(subject: str, version: int, term: str, **data: Any) -> Any:
    """`subject`'s AE-1 (onset day 9, grade 3, possibly related unless said) as the site codes it in `version`."""
    return related_ae(subject, DAY0 + timedelta(days=9), version=version, term=term, **data)


def confirmed_pneumonitis(driver: Driver, *subjects: str) -> None:
    three_in_a(driver, *subjects)
    for subject in subjects:
        decide(driver, subject, "confirmed", now=at(11))


# --- 1. a committee-confirmed DLT whose AE the site recodes ---------------------------------------------------------


def test_a_verbatim_synonym_of_the_confirmed_term_is_the_same_event(driver: Driver) -> None:
    """Febrile neutropenia confirmed (its own criterion); the site's coder rewrites the verbatim 'Neutropenic fever'
    (the same CTCAE term by the synonym list): nothing reopens, nothing is told, the arm still counts it confirmed."""
    subject_in(driver, "A-1", "A")
    fn = ae("A-1", term="Febrile neutropenia", grade=3, relatedness="possible", onset=at(15).date().isoformat())
    driver.apply(fn, now=at(15))
    decide(driver, "A-1", "confirmed", now=at(16))
    synonym = ae(
        "A-1", version=2, term="Neutropenic fever", grade=3, relatedness="possible", onset=at(15).date().isoformat()
    )
    out = driver.apply(synonym, now=at(17))
    assert findings(out) == [] and not of_type(out, "dlt.suspected")
    assert (record(driver, "A-1").state, cohort(driver).dlt_confirmed) == ("confirmed", 1)


def test_only_the_meddra_code_recoded_with_the_same_verbatim_is_told_and_reopened(driver: Driver) -> None:
    """The verbatim stays 'Pneumonitis' but the coder changes the MedDRA code to anaemia's (10002272): judged by the
    code, the AE now meets only 'haematological'. Reopening is the cautious side (the arm never escalates on it) and
    the committee is told the coding moved, so the coder's slip is caught rather than silently counted."""
    confirmed_pneumonitis(driver, "A-1")
    out = driver.apply(recoded("A-1", 2, "Pneumonitis", meddra_code="10002272"), now=at(14))
    assert of_type(out, "dlt.suspected"), "another criterion by the code: under review again"
    [finding] = findings(out)
    assert "'Anemia'" in finding.detail
    assert cohort(driver).dlt_confirmed == 0 and cohort(driver).dlt_suspected == 1


def test_only_the_verbatim_rewritten_with_the_pneumonitis_code_kept_stays_confirmed(driver: Driver) -> None:
    """The coder has not recoded yet: the verbatim says 'Lung inflammation' and the MedDRA code is still
    pneumonitis's (10035742): the AE is the event confirmed by its code, nothing reopens."""
    three_in_a(driver, "A-1")
    driver.apply(recoded("A-1", 1, "Pneumonitis", meddra_code="10035742"), now=at(10))
    decide(driver, "A-1", "confirmed", now=at(11))
    out = driver.apply(recoded("A-1", 2, "Lung inflammation", meddra_code="10035742"), now=at(14))
    assert not of_type(out, "dlt.suspected")
    assert (record(driver, "A-1").state, cohort(driver).dlt_confirmed) == ("confirmed", 1)


def test_a_recode_to_another_event_of_the_same_criterion_is_told_to_the_committee(driver: Driver) -> None:
    """A confirmed grade 3 pneumonitis recoded to grade 3 colitis (another event, the same criterion) stays confirmed,
    as designed, but was silent: the DLT listing and the minutes then said the committee confirmed colitis, which it
    never adjudicated (it might have attributed it differently, e.g. C. difficile). Fixed in dlt_decision_basis
    (`recoded`): the committee is told the term change once; a recode back to pneumonitis says the data are again
    the event confirmed."""
    confirmed_pneumonitis(driver, "A-1")
    out = driver.apply(recoded("A-1", 2, "Colitis"), now=at(14))
    assert record(driver, "A-1").state == "confirmed"
    [finding] = findings(out)
    assert "'Pneumonitis' to 'Colitis'" in finding.detail
    assert "an event the committee never adjudicated" in finding.detail
    assert not of_type(out, "dlt.suspected") and cohort(driver).dlt_confirmed == 1
    assert findings(driver.apply(recoded("A-1", 3, "Colitis", grade=4), now=at(15))) == [], "told once"
    [back] = findings(driver.apply(recoded("A-1", 4, "Pneumonitis"), now=at(16)))
    assert "the AE is again reported as 'Pneumonitis', the event confirmed" in back.detail
    assert (record(driver, "A-1").state, record(driver, "A-1").divergence) == ("confirmed", None)


def test_a_rejected_febrile_neutropenia_recoded_to_its_synonym_stays_rejected(driver: Driver) -> None:
    """Rejected 'Febrile neutropenia' (SRC: line infection before the infusion); the site rewrites the verbatim
    'Neutropenic fever', the same CTCAE term: no new evidence, the rejection stands, nothing reopens."""
    subject_in(driver, "A-1", "A")
    onset = at(15).date().isoformat()
    driver.apply(ae("A-1", term="Febrile neutropenia", grade=3, relatedness="possible", onset=onset), now=at(15))
    decide(driver, "A-1", "rejected", reason="SRC: line infection", now=at(16))
    synonym = ae("A-1", version=2, term="Neutropenic fever", grade=3, relatedness="possible", onset=onset)
    out = driver.apply(synonym, now=at(17))
    assert not of_type(out, "dlt.suspected") and findings(out) == []
    assert record(driver, "A-1").state == "rejected"


def test_a_confirmed_neutropenia_recoded_to_febrile_neutropenia_stays_in_the_tally(driver: Driver) -> None:
    """A grade 4 'Neutrophil count decreased' AE (screening ANC grade 3) confirmed under 'haematological'; the site
    recodes it 'Febrile neutropenia' grade 4 (the fever was charted later): the same episode made more specific.
    Whatever the rules make of it (confirmed, or reviewed again under febrile neutropenia's own criterion), it never
    leaves arm A's 3+3 tally."""
    driver.apply(neut_baseline())
    subject_in(driver, "A-1", "A")
    onset = at(10).date().isoformat()
    first = ae("A-1", term="Neutrophil count decreased", grade=4, relatedness="unlikely", onset=onset)
    [suspected] = of_type(driver.apply(first, now=at(10)), "dlt.suspected")
    assert suspected.data.criterion == "haematological"
    decide(driver, "A-1", "confirmed", now=at(11))
    fn = ae("A-1", version=2, term="Febrile neutropenia", grade=4, relatedness="unlikely", onset=onset)
    driver.apply(fn, now=at(12))
    arm = cohort(driver)
    assert arm.dlt_confirmed + arm.dlt_suspected == 1
    assert arm.decision != "escalate"


def neut_baseline() -> Any:
    from tests.unit.safety.test_clinical_rules import neut

    return neut("A-1", "B0", "0.8", -2, baseline=True)


def test_a_recode_to_a_grade_that_meets_nothing_leaves_the_confirmation_and_tells_it(driver: Driver) -> None:
    """Pneumonitis grade 3 confirmed, recoded 'Anemia' grade 2: no criterion met. The confirmation stands (only the
    committee revises it) and the committee hears the data no longer meet its criterion."""
    confirmed_pneumonitis(driver, "A-1")
    out = driver.apply(recoded("A-1", 2, "Anemia", grade=2), now=at(14))
    assert not of_type(out, "dlt.suspected")
    [finding] = findings(out)
    assert "no longer meets the DLT criterion 'non_haematological_grade3'" in finding.detail
    assert (record(driver, "A-1").state, cohort(driver).dlt_confirmed) == ("confirmed", 1)


def test_a_recode_with_its_onset_corrected_outside_the_dlt_window_is_told_not_reopened(driver: Driver) -> None:
    """Recoded 'Anemia' grade 3 and the onset corrected to day 40 (after arm A's 28-day window): it meets no criterion
    (outside the window), so nothing reopens; the committee is told the confirmed DLT's data moved out of it."""
    confirmed_pneumonitis(driver, "A-1")
    late = related_ae("A-1", DAY0 + timedelta(days=40), version=2, term="Anemia")
    out = driver.apply(late, now=at(41))
    assert not of_type(out, "dlt.suspected")
    [finding] = findings(out)
    assert "no longer meets" in finding.detail
    assert record(driver, "A-1").state == "confirmed"


def test_a_recode_then_a_second_recode_to_a_third_event_of_the_confirmed_criterion(driver: Driver) -> None:
    """Pneumonitis (confirmed) -> Anemia (reopened: haematological only) -> Colitis (non-haematological again): the
    confirmed criterion is met again, so the confirmation stands again and the reopened review is withdrawn; the
    arm counts one confirmed DLT, and the finding names the term as it now is."""
    confirmed_pneumonitis(driver, "A-1")
    driver.apply(recoded("A-1", 2, "Anemia"), now=at(14))
    out = driver.apply(recoded("A-1", 3, "Colitis"), now=at(15))
    assert of_type(out, "dlt.withdrawn")
    assert (record(driver, "A-1").state, cohort(driver).dlt_confirmed, cohort(driver).dlt_suspected) == (
        "confirmed",
        1,
        0,
    )
    [back] = findings(out)
    assert "AE AE-1 (Colitis, grade 3" in back.detail


def test_the_withdrawal_after_a_second_recode_does_not_say_it_is_the_event_confirmed(driver: Driver) -> None:
    """Withdrawing the review a second recode opened (Pneumonitis -> Anemia -> Colitis), the dlt.withdrawn signal said
    'the AE is again the event confirmed by olga' when it is colitis, an event the committee never saw (the rule only
    found the confirmed criterion met again). Fixed in protocol_engine: it names the term now and the one confirmed."""
    confirmed_pneumonitis(driver, "A-1")
    driver.apply(recoded("A-1", 2, "Anemia"), now=at(14))
    [withdrawn] = of_type(driver.apply(recoded("A-1", 3, "Colitis"), now=at(15)), "dlt.withdrawn")
    assert "again the event confirmed" not in withdrawn.data.reason
    assert "now reported as 'Colitis' (confirmed by olga as 'Pneumonitis')" in withdrawn.data.reason


def test_a_rejected_dlt_recoded_to_anaemia_is_reopened_under_its_new_criterion(driver: Driver) -> None:
    """Rejected pneumonitis (SRC: CMV on BAL); recoded 'Anemia' grade 3 (haematological, whatever the causality): a
    criterion the committee did not judge, so the DLT is suspected again and counted under review."""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="SRC: CMV pneumonitis", now=at(11))
    [suspected] = of_type(driver.apply(recoded("A-1", 2, "Anemia"), now=at(14)), "dlt.suspected")
    assert suspected.data.criterion == "haematological"
    assert cohort(driver).dlt_suspected == 1


def test_a_recode_after_the_arm_escalated_takes_the_escalation_back_and_says_so(driver: Driver) -> None:
    """Six subjects in arm A, A-1's DLT confirmed: 1 of 6, escalate. The site recodes A-1's AE to anaemia: the DLT is
    under review again, so arm A no longer escalates (never escalate with a review open), and the cohort decision
    signal tells the change from 'escalate'."""
    for subject in ("A-4", "A-5", "A-6"):
        subject_in(driver, subject, "A")
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(31))
    sweep(driver, at(31))
    assert cohort(driver).decision == "escalate"
    out = driver.apply(recoded("A-1", 2, "Anemia"), now=at(32))
    [change] = of_type(out, "cohort.decision")
    assert change.data.previous_decision == "escalate" and change.data.decision != "escalate"
    assert cohort(driver).decision != "escalate"


def test_a_recode_of_a_stopped_arm_holds_it_and_says_why(driver: Driver) -> None:
    """Arm A stopped on two confirmed DLTs; the site recodes A-2's pneumonitis to anaemia and the rules reopen it. The
    arm does not go back to enrolling: with 1 confirmed + 1 under review it is held (the stopping flag stays, no
    enrolment into A or above until the review ends), the change from 'stop' is signalled, and the 'no tolerated
    dose' verdict is withdrawn openly rather than left standing on a DLT now under review."""
    confirmed_pneumonitis(driver, "A-1", "A-2")
    assert (cohort(driver).decision, cohort(driver).stopping) == ("stop", True)
    out = driver.apply(recoded("A-2", 2, "Anemia"), now=at(14))
    [change] = of_type(out, "cohort.decision")
    assert (change.data.previous_decision, change.data.decision, change.data.stopping) == ("stop", "hold", True)
    assert "no enrolment into this or a higher arm" in change.data.reason
    [verdict] = of_type(out, "dose.recommended")
    assert verdict.data.basis == "withdrawn"
    assert (cohort(driver).decision, cohort(driver).stopping) == ("hold", True)


# --- 2. SAE / SUSAR re-entry clocks ---------------------------------------------------------------------------------


def susar_day0(driver: Driver, ae_id: str, subject: str = "A-1") -> Any:
    with Session(driver.engine) as session:
        case = session.get(SusarCase, (TRIAL, subject, ae_id))
        assert case is not None
        session.expunge(case)
        return case


def clock(signals: list[EnvelopeBase], ae_id: str) -> Any:
    return min(s.data.awareness_at for s in sae_signals(signals, ae_id) if s.type != "sae.withdrawn")


def test_a_different_event_entered_after_a_deletion_does_not_inherit_its_clock(driver: Driver) -> None:
    """AE-1 'Febrile neutropenia' deleted (entered in the wrong subject's log); the next day the site reports AE-2, a
    hospitalised pneumonia: another term, another event: its own 24 h clock, no re-entry finding."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(site_status("deleted", at(6, 8)), now=at(6, 8))
    out = driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9), term="Pneumonia"), now=at(6, 9))
    assert clock(out, "AE-2") == at(6, 9)
    assert reentry_findings(out) == []


def test_two_re_entries_of_one_deletion_both_keep_the_first_clock(driver: Driver) -> None:
    """The site re-enters the deleted febrile neutropenia twice (two coordinators): both are the case first received
    on day 5; each is told, so the officer sees the duplicate and the earlier due date."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(site_status("deleted", at(6, 8)), now=at(6, 8))
    out = driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9)), now=at(6, 9))
    out += driver.apply(febrile_neutropenia("AE-3", onset_day=5, received=at(6, 10)), now=at(6, 10))
    assert (clock(out, "AE-2"), clock(out, "AE-3")) == (at(5, 14), at(5, 14))
    assert sorted(f.record_id for f in reentry_findings(out)) == ["AE-2", "AE-3"]


def test_a_chain_of_re_entries_by_term_keeps_the_first_clock(driver: Driver) -> None:
    """AE-1 deleted, re-entered as AE-2 (same day); AE-2 deleted too (wrong form again), re-entered as AE-3: AE-3 is
    the case first received on day 5."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(site_status("deleted", at(6, 8)), now=at(6, 8))
    driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9)), now=at(6, 9))
    driver.apply(site_status("deleted", at(7, 8), ae_id="AE-2"), now=at(7, 8))
    out = driver.apply(febrile_neutropenia("AE-3", onset_day=5, received=at(7, 9)), now=at(7, 9))
    assert clock(out, "AE-3") == at(5, 14)


def explicit(ae_id: str, changed: Any, replaced_by: str) -> Any:
    envelope = site_status("entered_in_error", changed, ae_id=ae_id, reason="re-entered")
    return envelope.model_copy(update={"data": envelope.data.model_copy(update={"replaced_by": replaced_by})})


def test_a_chain_named_by_the_site_keeps_the_first_clock(driver: Driver) -> None:
    """AE-1 -> AE-2 -> AE-3, each retraction naming its replacement (a connector that says it), AE-3 entered 9 days
    after AE-1 (past the 7-day look-back: only the named links hold the chain). ICH E2D: day 0 is the sponsor's
    first receipt of the case, AE-1's on day 5, not AE-2's on day 9: the report is due on day 6."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(explicit("AE-1", at(9, 8), "AE-2"), now=at(9, 8))
    driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(9, 9)), now=at(9, 9))
    driver.apply(explicit("AE-2", at(14, 8), "AE-3"), now=at(14, 8))
    out = driver.apply(febrile_neutropenia("AE-3", onset_day=5, received=at(14, 9)), now=at(14, 9))
    assert clock(out, "AE-3") == at(5, 14)
    [told] = reentry_findings(out)
    assert "(AE AE-2 itself re-entered AE AE-1)" in told.detail
    assert "starts at AE AE-1's first receipt, 2026-03-07 14:00 UTC" in told.detail


def chain_events() -> list[Any]:
    return [
        febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)),
        explicit("AE-1", at(9, 8), "AE-2"),
        febrile_neutropenia("AE-2", onset_day=5, received=at(9, 9)),
        explicit("AE-2", at(14, 8), "AE-3"),
        febrile_neutropenia("AE-3", onset_day=5, received=at(14, 9)),
    ]


def test_a_chain_ends_on_the_first_clock_whatever_the_order(driver: Driver) -> None:
    """The chain AE-1 -> AE-2 -> AE-3 with AE-1's retraction processed last (a rebalance, a batch): only the AE that
    retraction names (AE-2, itself withdrawn) was reassessed, so AE-3 kept AE-2's receipt (day 9) as its 24 h clock
    instead of AE-1's (day 5), four days late. Fixed in sae_retraction.relinked_saes: a standing SAE whose chain
    reaches the AE taken back moves to the chain's first clock."""
    driver.apply_all(dosed(), now=at(0, 10))
    first, link1, second, link2, third = chain_events()
    out: list[EnvelopeBase] = []
    for event in (first, second, link2, third, link1):
        out += driver.apply(event, now=at(15))
    assert clock(out, "AE-3") == at(5, 14)
    [moved] = [s for s in sae_signals(out, "AE-3") if s.type == "sae.updated"]
    assert (moved.data.awareness_at, moved.data.clock_from_ae_id) == (at(5, 14), "AE-2")


def susar_chain() -> list[Any]:
    return [
        reaction(awareness_at=None),
        explicit("AE-1", at(1), "AE-2"),
        reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None),
        explicit("AE-2", at(2), "AE-3"),
        reaction(ae_id="AE-3", received=at(2, 11), awareness_at=None),
    ]


@pytest.mark.parametrize("last", [None, 1, 3])
def test_a_susar_chain_named_by_the_site_keeps_the_first_day_0(driver: Driver, last: int | None) -> None:
    """AE-1 -> AE-2 -> AE-3, a SUSAR each time: day 0 is AE-1's receipt (day 0, 14:00), in order or with one of the
    retractions processed last."""
    driver.apply_all(dosed(), now=at(0, 10))
    events = susar_chain()
    if last is not None:
        events.append(events.pop(last))
    for event in events:
        driver.apply(event, now=at(3))
    case = susar_day0(driver, "AE-3")
    assert (case.susar, case.clock_start) == (True, at(0, 14))


@pytest.mark.parametrize("retraction_last", [False, True])
def test_a_replaced_by_naming_an_ae_that_never_arrives_still_links_the_real_re_entry(
    driver: Driver, retraction_last: bool
) -> None:
    """The site deletes a hospitalised febrile neutropenia naming a replacement id it mistyped ('AE-9'); the real
    re-entry AE-2 (same term, same onset, the next morning) got its own, later 24 h clock: a retraction naming any
    replacement was excluded from the by-term link even when the named AE never arrived, so the report looked due a
    day later than ICH E2D's day 0. Fixed in sae_reentry: a replacement named but never entered links by term."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    events = [explicit_retraction(at(6, 8), "AE-9"), febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9))]
    out: list[EnvelopeBase] = []
    for event in reversed(events) if retraction_last else events:
        out += driver.apply(event, now=at(6, 9))
    assert clock(out, "AE-2") == at(5, 14)
    assert [f.record_id for f in reentry_findings(out)] == ["AE-2"]


def test_a_replaced_by_naming_an_ae_that_arrives_links_that_one_only(driver: Driver) -> None:
    """The named replacement AE-9 is entered: it is the re-entry (the site's word); AE-2, a febrile neutropenia with
    a later onset, is not linked by term any more."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(explicit_retraction(at(6, 8), "AE-9"), now=at(6, 8))
    out = driver.apply(febrile_neutropenia("AE-9", onset_day=5, received=at(6, 9)), now=at(6, 9))
    out += driver.apply(febrile_neutropenia("AE-2", onset_day=6, received=at(6, 10)), now=at(6, 10))
    assert (clock(out, "AE-9"), clock(out, "AE-2")) == (at(5, 14), at(6, 10))


def test_a_fatal_outcome_only_on_the_re_entry_runs_the_7_day_clock(driver: Driver) -> None:
    """AE-1, a grade 3 infusion reaction (SUSAR: 15 days from day 0), deleted; re-entered as AE-2 with the death the
    site learned of (grade 5, fatal). Day 0 stays AE-1's receipt (the same case), and the case became fatal when the
    re-entry arrived: the 7-day report counts from that knowledge (an upgrade, EU CTR Art. 42(2)(c); EU CT-3), not
    from AE-1's day 0 (already past for a death the sponsor did not know of) nor 15 days from it."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1), reason="re-entered"), now=at(1))
    fatal = reaction(
        ae_id="AE-2",
        received=at(1, 11),
        awareness_at=None,
        grade=5,
        outcome="fatal",
        seriousness={"death": True, "hospitalization": True},
    )
    out = driver.apply(fatal, now=at(1, 11))
    case = susar_day0(driver, "AE-2")
    assert (case.susar, case.fatal_or_life_threatening) == (True, True)
    assert (case.clock_start, case.upgraded_at) == (at(0, 14), at(1, 11))
    [susar] = [s for s in out if str(getattr(s, "type", "")).startswith("susar.") and s.data.ae_id == "AE-2"]
    assert "AE AE-1 (re-entered as this AE)" in susar.data.clock_basis


def test_a_replaced_by_id_held_by_two_other_subjects_links_at_most_one(driver: Driver) -> None:
    """Most EDCs number AEs per subject: A-2's AE-1 deleted naming 'AE-2' before A-2's own AE-2 is entered, while A-1
    and A-3 each hold a serious AE-2 received after it. Both were taken as its re-entry (one deletion, two re-entries)
    and both clocks moved to A-2's receipt. Fixed in reentry_links: an id held by more than one other subject links
    neither (each keeps its own clock) and the deleting subject's site is asked which AE re-enters it."""
    from tests.unit.safety.clinical import dose, enrol
    from tests.unit.safety.test_reentry_clocks import first_in_a2, in_a2, typo_deletion

    driver.apply_all([*in_a2(), *dosed(), enrol("A-3", "A", DAY0), dose("A-3", at(0))], now=at(0, 10))
    driver.apply(first_in_a2(), now=at(5, 14))
    driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(5, 20)), now=at(5, 20))
    driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(6, 7), subject="A-3"), now=at(6, 7))
    out = driver.apply(typo_deletion(), now=at(6, 8))
    moved = {s.subject for s in out if s.type == "sae.updated"}
    assert len(moved) <= 1, moved
    assert moved == set(), "an id two other subjects hold links neither: AE ids are numbered per subject"
    [asked] = [f.data for f in of_type(out, "data_quality.flagged") if f.data.code == SAE_REPLACED_BY_AMBIGUOUS]
    assert (asked.subject_id, asked.record_id) == ("A-2", "AE-1")
    assert "subjects A-1 and A-3 each hold one" in asked.detail


def test_a_cross_subject_replaced_by_does_not_link_an_unrelated_ae_months_later(driver: Driver) -> None:
    """A-2's AE-1 (febrile neutropenia, day 5) is deleted on day 6 naming 'AE-2' (the site re-enters it in A-2 under
    another id). On day 60 A-3 reports its own serious AE-2, a pneumonia: the cross-subject link had no time window
    and no term check, so A-3's pneumonia took A-2's day-5 clock, 'overdue' by 54 days the moment it arrived (false
    overdue pages) with a wrong SUSAR day 0. Fixed in sae_reentry: across subjects, the same term or the look-back."""
    from tests.unit.safety.clinical import dose, enrol
    from tests.unit.safety.test_reentry_clocks import first_in_a2, in_a2, typo_deletion

    driver.apply_all([*in_a2(), enrol("A-3", "A", DAY0), dose("A-3", at(0))], now=at(0, 10))
    driver.apply(first_in_a2(), now=at(5, 14))
    driver.apply(typo_deletion(), now=at(6, 8))
    pneumonia = febrile_neutropenia("AE-2", onset_day=59, received=at(60, 9), term="Pneumonia", subject="A-3")
    out = driver.apply(pneumonia, now=at(60, 9))
    assert clock(out, "AE-2") == at(60, 9)
    assert reentry_findings(out) == []


def test_a_cross_subject_re_entry_recoded_within_the_look_back_still_links(driver: Driver) -> None:
    """The typo re-entry recoded on the way ('Sepsis' for the febrile neutropenia, the next morning): no shared term,
    but within the look-back of the deletion the site's word holds."""
    from tests.unit.safety.test_reentry_clocks import first_in_a2, in_a2, typo_deletion

    driver.apply_all([*in_a2(), *dosed()], now=at(0, 10))
    driver.apply(first_in_a2(), now=at(5, 14))
    driver.apply(typo_deletion(), now=at(6, 8))
    out = driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9), term="Sepsis"), now=at(6, 9))
    assert clock(out, "AE-2") == at(5, 14)
