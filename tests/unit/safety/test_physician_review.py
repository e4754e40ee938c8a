"""Cases the trial's safety physician tried against the clinical rules (NCT07212335, the shipped protocol), each
one a defect found and fixed: the pure rules first, then the service layer."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine
from sqlmodel import Session, select

from services.safety.cohort import ArmTally, assess_trial
from services.safety.dlt import AeFacts, classify
from services.safety.dlt_window import DltWindow, infusion_window
from services.safety.expedited.cases import coded_term
from services.safety.expedited.expectedness import propose_expectedness
from services.safety.models import AeSeriousness, CohortState, DltRecord, SubjectOutcomeRow
from services.safety.sae import assess_ae
from shared.db import make_engine
from shared.events import AeData, AwarenessBasis, Relatedness
from shared.protocol import DEFAULT_PROTOCOL, Protocol, ProtocolError, parse_protocol
from tests.unit.safety.clinical import Driver, ae, ae_review, dose, enrol, of_type
from tests.unit.safety.test_clinical_rules import (
    DAY0,
    at,
    decide,
    neut,
    outcome_of,
    plat,
    related_ae,
    subject_in,
    sweep,
)


def test_no_recommended_dose_while_an_arm_below_is_on_hold(protocol: Protocol) -> None:
    """Arm B has 1 confirmed + 1 suspected DLT (hold): if the suspicion is confirmed B stops and the MTD is A, so
    arm C cannot be recommended (nor expanded: no enrolment into a higher arm until the review ends)."""
    tallies = {
        "A": ArmTally("A", enrolled=3, evaluable=3),
        "B": ArmTally("B", enrolled=6, evaluable=5, under_review=1, subjects_confirmed=1, subjects_suspected=1),
        "C": ArmTally("C", enrolled=6, evaluable=6),
    }
    assessed = assess_trial(protocol, tallies)
    assert assessed.by_arm()["B"].decision == "hold"
    assert assessed.recommendation is None
    assert assessed.by_arm()["C"].decision == "escalate", "the top arm is not declared recommended"


def test_no_recommended_dose_while_an_arm_below_has_not_cleared(protocol: Protocol) -> None:
    """Arm A at 1/3 must expand to 6 before anything above it can be the recommended dose."""
    tallies = {
        "A": ArmTally("A", enrolled=3, evaluable=3, subjects_confirmed=1, events_confirmed=1),
        "B": ArmTally("B", enrolled=3, evaluable=3),
        "C": ArmTally("C", enrolled=3, evaluable=3),
    }
    assessed = assess_trial(protocol, tallies)
    assert assessed.by_arm()["A"].decision == "expand"
    assert assessed.recommendation is None
    assert assessed.by_arm()["C"].decision == "escalate", "no expansion of C to confirm a dose while A is open"


def test_the_mtd_waits_for_the_arms_below_it(protocol: Protocol) -> None:
    """B is the MTD candidate (C stopped) but A has a suspected DLT open: no recommendation yet."""
    tallies = {
        "A": ArmTally("A", enrolled=3, evaluable=2, under_review=1, subjects_suspected=1, events_suspected=1),
        "B": ArmTally("B", enrolled=6, evaluable=6),
        "C": ArmTally("C", enrolled=3, evaluable=3, subjects_confirmed=2, events_confirmed=2),
    }
    assessed = assess_trial(protocol, tallies)
    assert assessed.by_arm()["C"].decision == "stop"
    assert assessed.recommendation is None


def window_from(day: date) -> DltWindow:
    return infusion_window(
        first_infusion=datetime.combine(day, time(10), tzinfo=UTC), site_day=day, days=28, count="anchor_is_day_0"
    )


def test_a_pancytopenia_is_worse_than_a_line_without_a_baseline(protocol: Protocol) -> None:
    """Grade 4 pancytopenia, baseline grade 4 neutropenia only (no Hb or platelet baseline): a line without a
    baseline is taken as normal, as for a single cytopenia, so the worsening of platelets or Hb can be in it."""
    pancytopenia = AeFacts(
        "AE-1",
        1,
        "Anemia",
        4,
        Relatedness.POSSIBLE,
        "2026-03-10",
        terms=("Anemia", "Neutrophil count decreased", "Platelet count decreased"),
    )
    verdict = classify(
        pancytopenia,
        rules=protocol.dlt,
        window=window_from(date(2026, 3, 2)),
        baseline_grades={"Neutrophil count decreased": 4},
    )
    assert verdict.meets and verdict.criterion == "haematological"
    every_line = {"Neutrophil count decreased": 4, "Anemia": 4, "Platelet count decreased": 4}
    unchanged = classify(
        pancytopenia, rules=protocol.dlt, window=window_from(date(2026, 3, 2)), baseline_grades=every_line
    )
    assert not unchanged.meets, "grade 4 on every line at baseline: not worse"


def test_a_serious_grade_2_pyrexia_coded_with_its_meddra_pt_is_the_expected_fever(protocol: Protocol) -> None:
    """The RSI lists Fever (CTCAE, LLT 10016558) up to grade 2; sites code the PT Pyrexia (10037660). The DLT rules
    map it to Fever; expectedness must too, or an expected reaction becomes a SUSAR with a 15-day report."""
    rsi = protocol.reference_safety_information
    assert rsi is not None
    for verbatim, code in (("Pyrexia", "10037660"), ("pyrexia", None), ("Infusion reaction", None)):
        term, _ = coded_term(verbatim, code)
        proposal = propose_expectedness(rsi, term=term, meddra_code=code, grade=2, fatal=False)
        assert proposal.expectedness == "expected", (verbatim, proposal.reason)
    term, _ = coded_term("Pyrexia", "10037660")
    assert propose_expectedness(rsi, term=term, meddra_code="10037660", grade=3, fatal=False).expectedness == (
        "unexpected"
    )


def test_an_sae_clock_never_starts_after_we_received_the_report() -> None:
    """The site wrote awareness 2026-03-15 on a report we received on 03-06 (a typo for 03-05): the site knew by the
    time it sent the report, so the 24 h clock starts no later than our receipt, never 9 days after it."""
    received = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
    typo = AeData.model_validate(
        {
            "ae_id": "AE-1",
            "version": 1,
            "term": "Pneumonia",
            "grade": 3,
            "seriousness": {"hospitalization": True},
            "awareness_at": "2026-03-15T08:00:00+00:00",
        }
    )
    opened = assess_ae(None, typo, received_at=received)
    assert opened.state.awareness_at == received
    assert opened.state.awareness_basis is AwarenessBasis.RECEIPT
    earlier = typo.model_copy(update={"version": 2, "awareness_at": datetime(2026, 3, 5, 8, 0, tzinfo=UTC)})
    moved = assess_ae(opened.state, earlier, received_at=received + timedelta(hours=2))
    assert moved.state.awareness_at == datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    assert moved.state.awareness_basis is AwarenessBasis.SITE


# --- through the service layer --------------------------------------------------------------------------------


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def test_a_result_tagged_baseline_but_drawn_after_the_first_infusion_is_no_baseline(driver: Driver) -> None:
    """Screening ANC 0.8 (grade 3) is the baseline. A day-3 ANC of 0.3 (grade 4) that the site tagged 'baseline' by
    mistake must not become the baseline and mask the worsening: a baseline is drawn before the product."""
    driver.apply(neut("A-1", "B0", "0.8", -2, baseline=True))
    subject_in(driver, "A-1", "A", visit=False)
    [suspected] = of_type(driver.apply(neut("A-1", "B1", "0.3", 3, baseline=True)), "dlt.suspected")
    assert suspected.data.ae_id == "lab:Neutrophil count decreased"
    assert "worse than baseline grade 3" in suspected.data.reason
    neutropenia = ae("A-1", ae_id="AE-2", term="Neutropenia", grade=4, relatedness="possible", onset="2026-03-05")
    [by_ae] = of_type(driver.apply(neutropenia), "dlt.suspected")
    assert "worse than baseline grade 3" in by_ae.data.reason


def test_an_arm_c_subject_with_no_assessment_after_week_4_is_not_dlt_free(driver: Driver) -> None:
    """Arm C's DLT period ends on day 49 (28 days after the fourth infusion). With only the week-4 visit required,
    a subject seen last on day 28 was 'DLT-free' on day 50 although nobody looked for 3 weeks. The arm's own
    required visits (`arms[].evaluable_requires_assessments`: week 7, at the end of its DLT period) must have data."""
    subject_in(driver, "C-1", "C", visit=False)  # infusions on days 0, 7, 14, 21
    driver.apply(neut("C-1", "W4", "2.5", 28))
    driver.apply(ae_review("C-1", at(28)))  # week 4 asks for the AE review too
    sweep(driver, at(50))
    pending = outcome_of(driver, "C-1")
    assert pending.outcome == "pending" and "week 7" in pending.reason
    sweep(driver, at(53))
    assert outcome_of(driver, "C-1").outcome == "not_evaluable", "the week-7 window (days 46-52) ended without data"
    driver.apply(neut("C-1", "W7", "2.4", 49), now=at(54))
    assert outcome_of(driver, "C-1").outcome == "evaluable"


def test_an_arms_required_visits_must_be_in_the_schedule() -> None:
    document = yaml.safe_load(resources.files("shared.protocols").joinpath(DEFAULT_PROTOCOL).read_text("utf-8"))
    assert [a.get("evaluable_requires_assessments") for a in document["arms"]] == [
        None,
        ["week 4", "week 5"],
        ["week 4", "week 7"],
    ]
    document["arms"][2]["evaluable_requires_assessments"] = ["week 7 1/2"]
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(yaml.safe_dump(document), "p.yaml")
    [problem] = caught.value.problems
    assert "arms[C].evaluable_requires_assessments" in problem and "week 7 1/2" in problem


def test_a_rejected_transient_worsening_reopens_when_the_grade_4_lasts_beyond_14_days(driver: Driver) -> None:
    """Baseline ANC grade 3; a grade 4 on day 3 is suspected and the officer rejects it as a transient dip. The ANC
    then stays grade 4 to day 18: a new grade 4 lasting more than 14 days is another protocol criterion, new
    evidence the officer has not judged, so the suspicion reopens (the rejected grade cannot be exceeded: 4 is
    the top of the scale)."""
    driver.apply(neut("A-1", "B0", "0.8", -2, baseline=True))
    subject_in(driver, "A-1", "A", visit=False)
    [first] = of_type(driver.apply(neut("A-1", "N3", "0.3", 3)), "dlt.suspected")
    assert first.data.criterion == "haematological"
    decide(driver, "A-1", "rejected", ae_id="lab:Neutrophil count decreased", now=at(4))
    for day in (10, 17):
        assert not of_type(driver.apply(neut("A-1", f"N{day}", "0.3", day), now=at(day)), "dlt.suspected")
    [reopened] = of_type(driver.apply(neut("A-1", "N18", "0.3", 18), now=at(18)), "dlt.suspected")
    assert reopened.data.criterion == "haematological_grade4_prolonged" and "15 day(s)" in reopened.data.reason
    assert outcome_of(driver, "A-1").outcome == "under_review"


def test_a_febrile_neutropenia_coded_with_the_wrong_meddra_code_is_still_judged_as_febrile_neutropenia(
    driver: Driver,
) -> None:
    """The verbatim says Febrile neutropenia, the code says Neutrophil count decreased (10029366). By the code alone
    it is a cytopenia not worse than the grade-4 baseline: no DLT. When code and words disagree, the AE is judged
    by each, and a criterion either meets counts (the officer sees why)."""
    driver.apply(neut("A-1", "B0", "0.3", -2, baseline=True))  # grade 4 at baseline
    subject_in(driver, "A-1", "A", visit=False)
    fn = ae(
        "A-1",
        term="Febrile neutropenia",
        meddra_code="10029366",
        grade=3,
        relatedness="not_related",
        onset="2026-03-17",
    )
    [suspected] = of_type(driver.apply(fn), "dlt.suspected")
    assert suspected.data.criterion == "febrile_neutropenia"
    assert "MedDRA code 10029366" in suspected.data.reason
    neutropenia = ae("A-1", ae_id="AE-2", term="Neutropenia", meddra_code="10029366", grade=4, onset="2026-03-17")
    assert not of_type(driver.apply(neutropenia), "dlt.suspected"), "code and words agree: not worse than baseline"


def test_an_arm_c_subjects_events_in_any_order_end_in_the_same_state(protocol: Protocol, tmp_path: Path) -> None:
    """Same data, any order: four infusions, baselines, AE versions (serious, then not related), a lab-only
    worsening, a thrombocytopenia AE, late labs and an infusion reaction, shuffled six ways. A suspicion raised
    by partial data and withdrawn when the rest arrived stays as history ('withdrawn'), so it is left out."""
    hosp = {"hospitalization": True}
    events = [
        enrol("C-1", "C", DAY0),
        neut("C-1", "B0", "0.8", -2, baseline=True),
        plat("C-1", "P0", "40", -2, baseline=True),
        *(dose("C-1", at(7 * n), number=n + 1) for n in range(4)),
        related_ae("C-1", DAY0 + timedelta(days=5), grade=2),
        related_ae("C-1", DAY0 + timedelta(days=5), version=2, seriousness=hosp, awareness_at=at(6)),
        related_ae("C-1", DAY0 + timedelta(days=5), version=3, relatedness="not_related"),
        plat("C-1", "P10", "20", 10),
        plat("C-1", "P17", "45", 17),
        related_ae("C-1", DAY0 + timedelta(days=40), ae_id="AE-2", term="Thrombocytopenia", grade=4),
        neut("C-1", "N49", "0.8", 49),
        related_ae("C-1", DAY0 + timedelta(days=46), ae_id="AE-3", term="Infusion reaction", relatedness="not_related"),
    ]

    def final_state(order: list[Any], name: str) -> Any:
        engine = make_engine(f"sqlite:///{tmp_path}/{name}.db")
        try:
            Driver(engine, protocol).apply_all(order, now=at(60))
            with Session(engine) as session:
                outcomes = [
                    (r.outcome, r.dlt_confirmed, r.dlt_suspected, r.infusions_given, r.evaluable_at)
                    for r in session.exec(select(SubjectOutcomeRow))
                ]
                dlts = sorted(
                    (r.ae_id, r.state, r.grade, r.criterion)
                    for r in session.exec(select(DltRecord))
                    if r.state != "withdrawn"
                )
                arms = sorted((r.arm, r.decision, r.enrolled, r.evaluable) for r in session.exec(select(CohortState)))
                saes = sorted(
                    (r.ae_id, tuple(r.criteria), r.max_grade, r.awareness_at)
                    for r in session.exec(select(AeSeriousness))
                )
                return outcomes, dlts, arms, saes
        finally:
            engine.dispose()

    expected = final_state(events, "in-order")
    assert expected[0] == [("under_review", 0, 2, 4, None)]
    for seed in range(6):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        assert final_state(shuffled, f"seed-{seed}") == expected, f"order {seed}"
