"""A safety physician and a data manager try the rule that tells a DLT's officers when the data their decision relied
on change under it (dlt_decision_basis) through the consumer: a 'not related' follow-up under a confirmed DLT, the
data returning, a rejection the data then contradict, a revision, a retraction, a lab-based DLT, and the same data
in any order or batching."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session

from services.safety.dlt_decision_basis import DECIDED_DLT_DATA_CHANGED
from services.safety.main import create_app
from services.safety.models import DltRecord
from services.safety.protocol_engine import dlt_id_for
from services.safety.retracted_dlt import CONFIRMED_DLT_AE_RETRACTED
from services.safety.settings import SafetySettings
from shared.clock import FakeClock
from shared.events import EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, dose, enrol, of_type, status, types
from tests.unit.safety.test_batch_physician import deliver
from tests.unit.safety.test_clinical_rules import DAY0, TRIAL, at, cohort, neut, outcome_of, related_ae, subject_in
from tests.unit.safety.test_physician_review_4 import NOW, OFFICER, decide, record, three_in_a, trail


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def findings(signals: list[EnvelopeBase]) -> list[Any]:
    return [s.data for s in of_type(signals, "data_quality.flagged") if s.data.code == DECIDED_DLT_DATA_CHANGED]


def follow_up(version: int, relatedness: str, **data: Any) -> Any:
    return related_ae("A-1", DAY0 + timedelta(days=9), version=version, relatedness=relatedness, **data)


def test_a_not_related_follow_up_is_told_once_naming_the_subject_the_ae_the_dlt_and_the_way_to_revise(
    driver: Driver,
) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", reason="CT: drug pneumonitis", now=at(11))
    [finding] = findings(driver.apply(follow_up(2, "not_related"), now=at(14)))
    dlt = record(driver, "A-1")
    about = (finding.subject_id, finding.record_type, finding.record_id, finding.site_id)
    assert about == ("A-1", "ae", "AE-1", "SITE-1")
    for fact in (
        "AE AE-1 (Pneumonitis, grade 3; AE version 2)",
        "relatedness from possible to not related",
        f"DLT {dlt.dlt_id} was confirmed by olga",
        "('CT: drug pneumonitis')",
        "still counts in arm A's 3+3 tally",
        f"reject DLT {dlt.dlt_id} with expected_state 'confirmed'",
    ):
        assert fact in finding.detail, fact
    assert (dlt.state, dlt.divergence, cohort(driver).dlt_confirmed) == ("confirmed", "no_longer_meets", 1)
    assert outcome_of(driver, "A-1").dlt_confirmed == 1, "the committee's decision stands until it revises it"

    later = driver.apply(follow_up(3, "not_related", grade=2), now=at(15))
    later += driver.apply(related_ae("A-1", DAY0 + timedelta(days=12), ae_id="AE-2", term="Rash", grade=1), now=at(16))
    later += driver.apply(neut("A-1", "N16", "2.5", 16), now=at(16))
    assert findings(later) == [], "told once, not on every later event of the subject"
    [entry] = [e for e in trail(driver.engine, f"dlt/{dlt.dlt_id}") if e.action == "dlt.basis_changed"]
    assert entry.detail["divergence"] == "no_longer_meets" and entry.detail["reason"] == finding.detail


def test_data_back_to_meeting_the_criterion_are_told_and_a_second_change_is_told_again(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    driver.apply(follow_up(2, "not_related"), now=at(14))
    [back] = findings(driver.apply(follow_up(3, "probable"), now=at(15)))
    assert "meets DLT criterion 'non_haematological_grade3' again (relatedness probable)" in back.detail
    assert record(driver, "A-1").divergence is None
    assert findings(driver.apply(follow_up(4, "possible"), now=at(16))) == [], "still meets: nothing to tell"
    [again] = findings(driver.apply(follow_up(5, "unlikely"), now=at(17)))
    assert "relatedness from possible to unlikely" in again.detail
    dlt = record(driver, "A-1").dlt_id
    entries = [e for e in trail(driver.engine, f"dlt/{dlt}") if e.action == "dlt.basis_changed"]
    assert [e.detail["divergence"] for e in entries] == ["no_longer_meets", None, "no_longer_meets"]


def test_an_onset_corrected_out_of_the_window_is_told_with_the_rules_reason(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    late = related_ae("A-1", DAY0 + timedelta(days=40), version=2)
    [finding] = findings(driver.apply(late, now=at(41)))
    assert "the site's data changed since the decision; the AE no longer meets" in finding.detail
    assert "onset 2026-04-11 is study day 40, outside study days 0-28" in finding.detail
    assert record(driver, "A-1").state == "confirmed"


def test_a_rejected_dlt_the_investigator_then_calls_definite_is_re_raised_and_still_rejected(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="SRC: CMV on BAL", now=at(11))
    assert findings(driver.apply(follow_up(2, "probable"), now=at(13))) != [], "a rise above what the committee saw"
    out = driver.apply(follow_up(3, "definite"), now=at(14))
    assert findings(out) == [], "once per divergence, not per step of the rise"
    assert [t for t in types(out) if t.startswith(("dlt.", "cohort."))] == []
    dlt = record(driver, "A-1")
    assert (dlt.state, dlt.divergence, cohort(driver).dlt_confirmed) == ("rejected", "more_related", 0)


def test_a_rejected_dlt_reopened_by_a_worse_grade_is_told_by_its_suspicion_not_by_a_finding(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="SRC: CMV", now=at(11))
    out = driver.apply(follow_up(2, "definite", grade=4), now=at(14))
    assert "dlt.suspected" in types(out) and findings(out) == []
    assert (record(driver, "A-1").state, record(driver, "A-1").divergence) == ("suspected", None)


def test_a_revision_takes_the_data_as_the_committee_saw_them_and_tells_it_of_later_changes(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    driver.apply(follow_up(2, "not_related"), now=at(14))
    revised = decide(driver, "A-1", "rejected", expected="confirmed", reason="investigator: not related", now=at(15))
    assert findings(revised) == [], "the revision itself is mailed (dlt.decided with revises)"
    dlt = record(driver, "A-1")
    assert (dlt.divergence, dlt.decided_met, dlt.decided_relatedness) == (None, False, "not_related")
    [news] = findings(driver.apply(follow_up(3, "possible"), now=at(16)))
    assert "the AE now meets DLT criterion 'non_haematological_grade3', which it did not when rejected" in news.detail
    assert f"confirm DLT {dlt.dlt_id} with expected_state 'rejected'" in news.detail


def test_a_confirmation_of_a_withdrawn_dlt_is_not_told_what_its_officer_saw(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    driver.apply(follow_up(2, "not_related"), now=at(11))
    out = decide(driver, "A-1", "confirmed", expected="withdrawn", reason="SRC: related despite the site", now=at(12))
    assert findings(out) == [] and findings(driver.apply(follow_up(3, "unlikely"), now=at(13))) == []
    assert record(driver, "A-1").decided_met is False


def test_an_ae_taken_back_under_a_confirmed_dlt_raises_its_own_finding_only(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    driver.apply(follow_up(2, "not_related"), now=at(12))
    out = driver.apply(status("A-1", "ae", "AE-1"), now=at(13))
    codes = [s.data.code for s in of_type(out, "data_quality.flagged")]
    assert codes == [CONFIRMED_DLT_AE_RETRACTED], "the retraction's finding, no 'data back' notice"
    assert record(driver, "A-1").divergence is None


def test_the_labs_behind_a_confirmed_lab_dlt_taken_back_are_told(driver: Driver) -> None:
    driver.apply(neut("A-1", "B0", "0.8", -2, baseline=True))  # grade 3 at entry
    subject_in(driver, "A-1", "A", visit=False)
    [suspected] = of_type(driver.apply(neut("A-1", "N5", "0.3", 5)), "dlt.suspected")
    decide(driver, "A-1", "confirmed", ae_id=suspected.data.ae_id, now=at(6))
    [finding] = findings(driver.apply(status("A-1", "lab", "N5"), now=at(7)))
    assert (finding.record_type, finding.record_id) == ("lab", suspected.data.ae_id)
    assert "the 'Neutrophil count decreased' lab results" in finding.detail
    assert "no longer meets the DLT criterion 'haematological'" in finding.detail


def test_a_decision_from_before_the_upgrade_is_told_once_at_the_next_event(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    driver.apply(follow_up(2, "not_related"), now=at(12))
    with Session(driver.engine) as session, session.begin():  # as migration safety_0012 leaves such a row
        row = session.get(DltRecord, dlt_id_for(TRIAL, "A-1", "AE-1"))
        assert row is not None
        row.divergence, row.decided_met, row.decided_relatedness = None, True, "not_related"
    assert len(findings(driver.apply(dose("A-1", at(14), number=2), now=at(14)))) == 1
    assert findings(driver.apply(follow_up(3, "not_related"), now=at(15))) == []


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("last_word", ["not_related", "possible"])
def test_the_same_follow_ups_in_any_order_end_in_one_stored_state(
    protocol: Protocol, tmp_path: Path, batched: bool, last_word: str
) -> None:
    """v2 and v3 of the AE under a confirmed DLT, the site's last word v3, with another AE of the subject, in every
    order and batching: the same stored record, and told only if the last word takes the AE out of the criterion."""
    base = [enrol("A-1", "A", DAY0), dose("A-1", at(0)), follow_up(1, "possible")]
    middle = "possible" if last_word == "not_related" else "not_related"
    events = [
        follow_up(2, middle),
        follow_up(3, last_word),
        related_ae("A-1", DAY0 + timedelta(days=10), ae_id="AE-2", term="Rash", grade=1),
    ]
    stored: set[tuple[Any, ...]] = set()
    for n, order in enumerate(itertools.permutations(events)):
        steps = [base, lambda d: decide(d, "A-1", "confirmed", now=at(11)), list(order)]
        run = deliver(tmp_path, protocol, f"{batched}-{last_word}-{n}", steps, batched=batched, now=at(12))
        dlt = record(run.driver, "A-1")
        stored.add((dlt.state, dlt.relatedness, dlt.divergence, dlt.decided_met, dlt.decided_relatedness))
        told = [f.detail for f in findings(run.signals)]
        if last_word == "not_related":
            assert len(told) >= 1 and "no longer meets" in told[-1], n
        else:
            assert not told or "again" in told[-1], (n, told)
    diverged = "no_longer_meets" if last_word == "not_related" else None
    assert stored == {("confirmed", last_word, diverged, True, "possible")}


def test_the_dlt_api_shows_the_decision_basis_the_console_warns_with(tmp_path: Path, clean_env: None) -> None:
    settings = SafetySettings(var_dir=tmp_path, api_tokens={OFFICER: {"user": "olga", "role": "officer"}})
    app = create_app(settings, clock=FakeClock(NOW), registry=CollectorRegistry())
    driver = Driver(app.state.engine, app.state.protocol)
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    driver.apply(follow_up(2, "not_related"), now=at(14))
    client = TestClient(app)
    [dlt] = client.get(f"/v1/trials/{TRIAL}/dlts", headers={"authorization": f"Bearer {OFFICER}"}).json()
    assert (dlt["state"], dlt["relatedness"]) == ("confirmed", "not_related")
    assert (dlt["decided_relatedness"], dlt["divergence"]) == ("possible", "no_longer_meets")
