"""A safety physician (review 8) tries to break the day's two safety changes with cases a site produces: a confirmed
DLT recoded to another event of its criterion is told to the committee (`dlt_decision_basis`, divergence `recoded`),
and a `replaced_by` id several other subjects hold links none of them (`reentry_links`, `sae_retraction.
ambiguous_replacement`, `new_holder`). A case the system gets right passes; one it gets wrong is a strict xfail whose
reason says the clinical divergence and why it matters."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, dose, enrol, of_type
from tests.unit.safety.test_clinical_rules import DAY0, at, cohort
from tests.unit.safety.test_physician_review_3 import dosed
from tests.unit.safety.test_physician_review_4 import decide, record, three_in_a
from tests.unit.safety.test_physician_review_6 import findings, sae_signals
from tests.unit.safety.test_physician_review_7 import confirmed_pneumonitis, recoded
from tests.unit.safety.test_reentry_clocks import (
    ambiguous,
    day0,
    ended,
    in_a2,
    in_a3,
    susar_in,
    typo_deletion,
)


@pytest.fixture
def driver(tmp_path: Path, protocol: Protocol) -> Driver:
    from shared.db import make_engine

    return Driver(make_engine(f"sqlite:///{tmp_path}/review8.db"), protocol)


# --- 1. a confirmed (or rejected) DLT whose AE the site recodes within its criterion -------------------------------


def test_a_recode_back_and_forth_is_told_at_every_change(driver: Driver) -> None:
    """Pneumonitis (confirmed) -> Colitis -> Pneumonitis -> Colitis: the site's coder and the investigator disagree.
    Each change of the event the listing names is told (recoded, back to the event confirmed, recoded again): the
    committee's agenda follows the data, and the confirmation stands throughout (1 confirmed DLT in arm A)."""
    confirmed_pneumonitis(driver, "A-1")
    told = []
    for version, (term, day) in enumerate([("Colitis", 14), ("Pneumonitis", 15), ("Colitis", 16)], start=2):
        [finding] = findings(driver.apply(recoded("A-1", version, term), now=at(day)))
        told.append(finding.detail)
        assert (record(driver, "A-1").state, cohort(driver).dlt_confirmed) == ("confirmed", 1)
    assert "'Pneumonitis' to 'Colitis'" in told[0] and "'Pneumonitis' to 'Colitis'" in told[2]
    assert "again reported as 'Pneumonitis', the event confirmed" in told[1]
    assert record(driver, "A-1").divergence == "recoded"


def test_a_same_term_follow_up_of_a_recoded_dlt_tells_nothing_more(driver: Driver) -> None:
    """Recoded to Colitis (told), then the site's follow-up version keeps Colitis and adds the outcome: the event the
    listing names did not change again, so nothing more is told (no agenda noise)."""
    confirmed_pneumonitis(driver, "A-1")
    driver.apply(recoded("A-1", 2, "Colitis"), now=at(14))
    out = driver.apply(recoded("A-1", 3, "Colitis", outcome="recovered"), now=at(20))
    assert findings(out) == []


def test_a_second_recode_to_a_third_event_of_the_same_criterion_is_told(driver: Driver) -> None:
    """Pneumonitis (confirmed) recoded to Colitis (told), then to Diarrhea (the same criterion): the divergence stayed
    'recoded', so nothing was told, and the committee, with colitis on its agenda, never heard the listing now names
    diarrhoea. Fixed in dlt_decision_basis.check_basis: a recode to yet another event is told (the term of the look
    before is compared); the same term again (a follow-up) still tells nothing."""
    confirmed_pneumonitis(driver, "A-1")
    driver.apply(recoded("A-1", 2, "Colitis"), now=at(14))
    out = driver.apply(recoded("A-1", 3, "Diarrhea"), now=at(15))
    [finding] = findings(out)
    assert "'Pneumonitis' to 'Diarrhea'" in finding.detail and "never adjudicated" in finding.detail
    assert findings(driver.apply(recoded("A-1", 4, "Diarrhea", outcome="recovered"), now=at(20))) == []
    assert (record(driver, "A-1").state, cohort(driver).dlt_confirmed) == ("confirmed", 1)


def test_a_rejected_dlt_recoded_to_another_event_of_the_same_criterion_is_told(driver: Driver) -> None:
    """A DLT the committee rejected as pneumonitis (SRC: CMV pneumonitis on BAL) is recoded by the site to grade 3
    colitis, possibly related (the same criterion). It stayed rejected and nobody was told: the arm's 3+3 left out a
    colitis no one adjudicated, on an attribution (a lung infection) that says nothing of the colon, and leaving out
    a DLT is the unsafe side (escalation). Fixed in dlt_decision_basis (`recoded` for rejections too): the rejection
    stands (only the committee revises it), the committee is told the term change, and the recode back is told."""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="SRC: CMV pneumonitis", now=at(11))
    out = driver.apply(recoded("A-1", 2, "Colitis"), now=at(14))
    assert record(driver, "A-1").state == "rejected" and not of_type(out, "dlt.suspected")
    [finding] = findings(out)
    assert "'Pneumonitis' to 'Colitis'" in finding.detail
    assert "the rejection stands" in finding.detail and "never adjudicated" in finding.detail
    assert cohort(driver).dlt_confirmed == 0
    [back] = findings(driver.apply(recoded("A-1", 3, "Pneumonitis"), now=at(15)))
    assert "again reported as 'Pneumonitis', the event rejected" in back.detail
    assert (record(driver, "A-1").state, record(driver, "A-1").divergence) == ("rejected", None)


def test_a_rejected_dlt_recoded_to_a_synonym_tells_nothing(driver: Driver) -> None:
    """The rejected pneumonitis's verbatim rewritten 'pneumonitis ' (case and spacing): the same event, nothing told."""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="SRC: CMV pneumonitis", now=at(11))
    assert findings(driver.apply(recoded("A-1", 2, "pneumonitis "), now=at(14))) == []


def test_a_recode_that_also_drops_below_the_criterion_then_comes_back_is_told_each_time(driver: Driver) -> None:
    """Pneumonitis grade 3 (confirmed) -> Colitis grade 2 (no criterion met: told, naming the term change) -> Colitis
    grade 3 (meets the criterion confirmed again, but as another event): told again, as a recode, not as 'the AE is
    the event confirmed'."""
    confirmed_pneumonitis(driver, "A-1")
    [dropped] = findings(driver.apply(recoded("A-1", 2, "Colitis", grade=2), now=at(14)))
    assert "no longer meets" in dropped.detail and "'Pneumonitis' to 'Colitis'" in dropped.detail
    [back] = findings(driver.apply(recoded("A-1", 3, "Colitis"), now=at(15)))
    assert "an event the committee never adjudicated" in back.detail
    assert "the event confirmed" not in back.detail.split("an event the committee never adjudicated")[0]
    assert (record(driver, "A-1").state, record(driver, "A-1").divergence) == ("confirmed", "recoded")


# --- 2. a replaced_by id several other subjects hold ----------------------------------------------------------------


def ambiguous_case(driver: Driver) -> None:
    """A-2's serious AE-1 (day 0, 14:00) deleted on day 1 naming 'AE-2'; A-1 and A-3 each report a serious AE-2."""
    driver.apply_all(in_a2() + in_a3() + list(dosed()), now=at(0, 10))
    driver.apply(susar_in("A-2", "AE-1", at(0, 14)), now=at(0, 14))
    driver.apply(typo_deletion(changed=at(1, 9)), now=at(1, 9))
    driver.apply(susar_in("A-1", "AE-2", at(1, 11)), now=at(1, 11))
    driver.apply(susar_in("A-3", "AE-2", at(1, 12)), now=at(1, 12))


def test_a_third_holder_asks_the_site_again_naming_all_of_them(driver: Driver) -> None:
    """After the site was asked (A-1 and A-3 hold an AE-2), A-4's AE-2 arrives: still no link, each keeps its own
    clock, and the site is asked again with the full list, so the answer it gives can name the right one."""
    ambiguous_case(driver)
    driver.apply_all([enrol("A-4", "A", DAY0), dose("A-4", at(0))], now=at(0, 10))
    out = driver.apply(susar_in("A-4", "AE-2", at(1, 13)), now=at(1, 13))
    [asked] = ambiguous(out)
    assert (asked.subject_id, asked.record_id) == ("A-2", "AE-1")
    assert "subjects A-1, A-3 and A-4 each hold one" in asked.detail
    assert day0(driver, "AE-2", subject="A-4") == (True, at(1, 13))
    assert day0(driver, "AE-2") == (True, at(1, 11))


def test_a_follow_up_version_of_a_holders_ae_does_not_ask_again(driver: Driver) -> None:
    """A-3's AE-2 follow-up (version 2, outcome added) is not a new holder: the site is not asked again."""
    ambiguous_case(driver)
    follow_up = susar_in("A-3", "AE-2", at(2, 9))
    follow_up = follow_up.model_copy(
        update={"id": "A-3-AE-2-v2", "data": follow_up.data.model_copy(update={"version": 2, "outcome": "recovered"})}
    )
    assert ambiguous(driver.apply(follow_up, now=at(2, 9))) == []


def test_the_deleting_subjects_own_ae_arriving_after_the_question_settles_it(driver: Driver) -> None:
    """The site answers by entering the re-entry under A-2 itself (AE-2 of A-2): the name is now A-2's own, so A-2's
    AE-2 takes AE-1's day 0 (the sponsor knew of the case from AE-1), and A-1's and A-3's keep their own."""
    ambiguous_case(driver)
    out = driver.apply(susar_in("A-2", "AE-2", at(2, 8)), now=at(2, 8))
    assert ambiguous(out) == []
    assert day0(driver, "AE-2", subject="A-2") == (True, at(0, 14))
    assert (day0(driver, "AE-2"), day0(driver, "AE-2", subject="A-3")) == ((True, at(1, 11)), (True, at(1, 12)))
    [sae] = [s for s in sae_signals(out, "AE-2") if s.subject == "A-2" and s.type != "sae.withdrawn"]
    assert sae.data.awareness_at == at(0, 14)


def test_restoring_the_deleted_ae_then_deleting_it_again_asks_once_more(driver: Driver) -> None:
    """A-2's AE-1 restored (it was A-2's after all): no question stands and nothing is linked; deleted again naming
    'AE-2', the site is asked again (once), and A-1's and A-3's AE-2s keep their own clocks throughout."""
    ambiguous_case(driver)
    restore = typo_deletion(changed=at(2))
    restore = restore.model_copy(
        update={"id": "restore-a2-ae1", "data": restore.data.model_copy(update={"status": "restored"})}
    )
    out = driver.apply(restore, now=at(2))
    assert ambiguous(out) == [] and ended(out, "A-1") == [] and ended(out, "A-3") == []
    again = typo_deletion(changed=at(3)).model_copy(update={"id": "delete-a2-ae1-again"})
    [asked] = ambiguous(driver.apply(again, now=at(3)))
    assert asked.subject_id == "A-2"
    assert (day0(driver, "AE-2"), day0(driver, "AE-2", subject="A-3")) == ((True, at(1, 11)), (True, at(1, 12)))


def test_two_deleting_subjects_naming_the_same_id_are_both_asked(driver: Driver) -> None:
    """Two subjects' serious AE-1s (A-2's and A-5's: AE ids are numbered per subject) deleted naming 'AE-2', A-1's
    AE-2 the only holder; A-3's AE-2 then arrives and both sites must be asked which AE re-enters their AE-1. The two
    findings had one signal id (the event, the code and the record id 'AE-1', not the subject), so the outbox kept
    the first and dropped the second: A-5's site was never asked. Fixed in data_quality.flag: a per-record id names
    the subject too."""
    driver.apply_all(in_a2() + in_a3() + list(dosed()) + [enrol("A-5", "A", DAY0), dose("A-5", at(0))], now=at(0, 10))
    driver.apply(susar_in("A-2", "AE-1", at(0, 14)), now=at(0, 14))
    driver.apply(susar_in("A-5", "AE-1", at(0, 15)), now=at(0, 15))
    driver.apply(typo_deletion(changed=at(1, 9)), now=at(1, 9))
    a5 = typo_deletion(changed=at(1, 10))
    driver.apply(a5.model_copy(update={"id": "delete-a5-ae1", "subject": "A-5"}), now=at(1, 10))
    driver.apply(susar_in("A-1", "AE-2", at(1, 11)), now=at(1, 11))
    out = driver.apply(susar_in("A-3", "AE-2", at(1, 12)), now=at(1, 12))
    ids = Counter(s.id for s in out)
    shared = [(s.subject, getattr(s, "type", "")) for s in out if ids[s.id] > 1]
    assert shared == [], "two different findings under one signal id: the outbox keeps only the first"
    assert sorted(a.subject_id for a in ambiguous(out)) == ["A-2", "A-5"]


def test_a_deleted_ae_made_serious_by_a_late_version_asks_the_site(driver: Driver) -> None:
    """A-2's AE-1 was entered as a non-serious reaction and deleted naming 'AE-2', which A-1 and A-3 each hold as a
    serious AE: no SAE clock hung on AE-1, so nobody was asked. The EDC then delivers AE-1's version 2, ticked
    'hospitalised' (saved before the deletion): now a 24 h clock hangs on an ambiguous replacement, and A-2's site is
    asked which AE re-enters it; A-1's and A-3's AE-2s keep their own day 0."""
    driver.apply_all(in_a2() + in_a3() + list(dosed()), now=at(0, 10))
    non_serious = susar_in("A-2", "AE-1", at(0, 14))
    non_serious = non_serious.model_copy(update={"data": non_serious.data.model_copy(update={"seriousness": None})})
    driver.apply(non_serious, now=at(0, 14))
    assert ambiguous(driver.apply(typo_deletion(changed=at(1, 9)), now=at(1, 9))) == []
    driver.apply(susar_in("A-1", "AE-2", at(1, 11)), now=at(1, 11))
    assert ambiguous(driver.apply(susar_in("A-3", "AE-2", at(1, 12)), now=at(1, 12))) == [], "no SAE clock yet"
    late = susar_in("A-2", "AE-1", at(1, 13))
    late = late.model_copy(update={"id": "A-2-AE-1-v2", "data": late.data.model_copy(update={"version": 2})})
    [asked] = ambiguous(driver.apply(late, now=at(1, 13)))
    assert (asked.subject_id, asked.record_id) == ("A-2", "AE-1")
    assert "subjects A-1 and A-3 each hold one" in asked.detail
    assert (day0(driver, "AE-2"), day0(driver, "AE-2", subject="A-3")) == ((True, at(1, 11)), (True, at(1, 12)))
