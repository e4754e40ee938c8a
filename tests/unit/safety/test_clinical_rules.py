"""Issue 10 points 1-10 through the consumer's service layer with the shipped NCT07212335 protocol, and the cases a
safety physician tried to break it with (arm C's four weekly infusions, the day-28 boundary, a withdrawn subject
with a DLT, 1 confirmed + 1 suspected of 6, grade 4 baseline neutropenia)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, select

from services.safety.models import CohortState, DltRecord, SubjectOutcomeRow
from services.safety.protocol_engine import decide_dlt, dlt_id_for
from services.safety.sweep import run_sweep
from shared.events import (
    EnvelopeBase,
    SubjectStatusChanged,
    SubjectStatusData,
    deterministic_id,
)
from shared.protocol import Protocol
from tests.unit.safety.clinical import (
    RECEIVED,
    SIGNALS,
    Driver,
    ae,
    ae_review,
    dose,
    enrol,
    lab,
    of_type,
    status,
    types,
)

TRIAL = "NCT07212335"
DAY0 = date(2026, 3, 2)
PLANS = {"A": 1, "B": 2, "C": 4}


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def at(day: int, hour: int = 10, start: date = DAY0) -> datetime:
    return datetime.combine(start + timedelta(days=day), datetime.min.time(), tzinfo=UTC) + timedelta(hours=hour)


def subject_in(
    driver: Driver, subject: str, arm: str, *, start: date = DAY0, infusions: int | None = None, visit: bool = True
) -> list[EnvelopeBase]:
    """Enrol, infuse as the arm plans (weekly), and post labs and the AE review at the arm's required visits (week 4;
    arm B's week 5 and arm C's week 7 at the end of their DLT periods)."""
    now = at(1, start=start)
    out = driver.apply(enrol(subject, arm, start), now=now)
    for number in range(1, (infusions if infusions is not None else PLANS[arm]) + 1):
        out += driver.apply(dose(subject, at(7 * (number - 1), start=start), number=number), now=now)
    if visit:
        planned = driver.protocol.arm(arm)
        names = driver.protocol.cohort.evaluable_requires_assessments
        if planned is not None and planned.evaluable_requires_assessments is not None:
            names = planned.evaluable_requires_assessments
        for visit_day in sorted({a.day for a in driver.protocol.assessments if a.name in names} | {28}):
            result_id = f"{subject}-W4" if visit_day == 28 else f"{subject}-D{visit_day}"
            labs = lab(
                subject,
                result_id=result_id,
                test="NEUT",
                value="2.5",
                lln="2.0",
                collected_at=at(visit_day, start=start),
            )
            out += driver.apply(labs, now=now)
            out += driver.apply(ae_review(subject, at(visit_day, start=start)), now=now)  # in the visit's window
    return out


def sweep(driver: Driver, now: datetime) -> list[EnvelopeBase]:
    return [o.envelope for o in run_sweep(driver.engine, protocol=driver.protocol, now=now, signals_topic=SIGNALS)]


def decide(
    driver: Driver, subject: str, decision: str, *, ae_id: str = "AE-1", now: datetime | None = None
) -> list[Any]:
    with Session(driver.engine) as session, session.begin():
        outcome = decide_dlt(
            session,
            protocol=driver.protocol,
            dlt_id=dlt_id_for(TRIAL, subject, ae_id),
            decision=decision,  # type: ignore[arg-type]
            actor="officer@site",
            reason="reviewed",
            now=now or at(40),
            signals_topic=SIGNALS,
        )
    return [o.envelope for o in outcome.signals]


def cohort(driver: Driver, arm: str = "A") -> CohortState:
    with Session(driver.engine) as session:
        row = session.get(CohortState, (TRIAL, arm))
        assert row is not None
        session.expunge(row)
        return row


def outcome_of(driver: Driver, subject: str) -> SubjectOutcomeRow:
    with Session(driver.engine) as session:
        row = session.get(SubjectOutcomeRow, (TRIAL, subject))
        assert row is not None
        session.expunge(row)
        return row


def subject_status(subject: str, value: str, on: date | None = None, reason: str | None = None) -> SubjectStatusChanged:
    return SubjectStatusChanged(
        id=deterministic_id("inbound", subject, "status", value),
        source="/sources/edc",
        subject=subject,
        time=RECEIVED,
        trialid=TRIAL,
        siteid="SITE-1",
        receivedat=RECEIVED,
        senderid=f"status-{subject}-{value}",
        data=SubjectStatusData(status=value, effective_on=on, reason=reason),  # type: ignore[arg-type]
    )


def related_ae(subject: str, onset: date, *, ae_id: str = "AE-1", **data: Any) -> Any:
    return ae(subject, ae_id=ae_id, onset=onset.isoformat(), relatedness=data.pop("relatedness", "possible"), **data)


def decisions(signals: list[EnvelopeBase]) -> list[tuple[str, str]]:
    return [(s.data.arm, s.data.decision) for s in of_type(signals, "cohort.decision")]


# --- points 1 and 2 -------------------------------------------------------------------------------------------


def test_three_of_three_with_a_suspected_dlt_awaits_review_and_enrolling_into_b_pages(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A")
    out = driver.apply(related_ae("A-1", DAY0 + timedelta(days=9)), now=at(10))
    assert decisions(out) == [("A", "awaiting_dlt_review")]
    assert decisions(sweep(driver, at(40))) == [], "the windows closed, but the review is still open"
    assert cohort(driver).decision == "awaiting_dlt_review"
    deviations = driver.apply(enrol("B-1", "B", DAY0 + timedelta(days=41)), now=at(41))
    [deviation] = of_type(deviations, "protocol.deviation")
    assert deviation.data.kind == "enrolled_above_arm_awaiting_dlt_review" and deviation.data.pages


def test_one_confirmed_plus_one_suspected_of_six_holds_and_enrolment_above_is_a_deviation(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A")
    driver.apply(related_ae("A-1", DAY0 + timedelta(days=9)), now=at(10))
    assert decisions(decide(driver, "A-1", "confirmed", now=at(11))) == [("A", "expand")]
    later = DAY0 + timedelta(days=35)
    for subject in ("A-4", "A-5", "A-6"):
        subject_in(driver, subject, "A", start=later)
    out = driver.apply(related_ae("A-5", later + timedelta(days=5)), now=at(41))
    assert types(out) == ["dlt.suspected", "cohort.decision", "stopping_rule.fired"]
    assert (cohort(driver).decision, cohort(driver).stopping) == ("hold", True)
    assert decisions(sweep(driver, at(90))) == [], "all windows closed: still held, never escalate"
    for arm in ("A", "B"):
        kinds = [
            d.data.kind
            for d in of_type(driver.apply(enrol(f"{arm}-9", arm, DAY0 + timedelta(days=91))), "protocol.deviation")
        ]
        assert kinds and all(
            k in ("enrolled_in_held_arm", "enrolled_above_arm_hold", "arm_over_capacity") for k in kinds
        )
    # the review ends (rejected): the hold lifts; A-9, enrolled during the hold, is still in observation
    assert decisions(decide(driver, "A-5", "rejected", ae_id="AE-1", now=at(92))) == [("A", "evaluating")]


# --- point 3: evaluability ------------------------------------------------------------------------------------


def test_arm_c_subject_with_one_of_four_infusions_is_not_evaluable_and_needs_a_replacement(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A")
    sweep(driver, at(40))
    c_start = DAY0 + timedelta(days=40)
    for subject in ("C-1", "C-2"):
        subject_in(driver, subject, "C", start=c_start)
    subject_in(driver, "C-3", "C", start=c_start, infusions=1)
    out = sweep(driver, at(80, start=c_start))  # every window (day 49 for arm C) is over
    assert outcome_of(driver, "C-3").outcome == "not_evaluable"
    assert "received 1 of 4" in outcome_of(driver, "C-3").reason
    assert outcome_of(driver, "C-1").outcome == "evaluable"
    assert cohort(driver, "C").decision == "enrolling" and cohort(driver, "C").replacements_needed == 1
    assert [d for d in decisions(out) if d[0] == "C"] == [("C", "enrolling")]


def test_a_subject_without_the_week_4_visit_is_not_evaluable_until_it_arrives(driver: Driver) -> None:
    subject_in(driver, "A-1", "A", visit=False)
    sweep(driver, at(30))
    assert outcome_of(driver, "A-1").outcome == "pending", "the week-4 visit window still runs (day 31)"
    sweep(driver, at(33))
    assert outcome_of(driver, "A-1").outcome == "not_evaluable"
    late = lab("A-1", result_id="W4-late", test="NEUT", value="2.5", lln="2.0", collected_at=at(30))
    driver.apply(late, now=at(35))
    assert outcome_of(driver, "A-1").outcome == "not_evaluable", "a lab is not the visit's AE assessment"
    driver.apply(ae_review("A-1", at(30)), now=at(35))  # assessed inside the week-4 window, visit not named
    assert outcome_of(driver, "A-1").outcome == "evaluable", "late data revise it"


def test_a_subject_with_no_data_is_pending_not_dlt_free(driver: Driver) -> None:
    driver.apply(enrol("A-1", "A", DAY0))
    sweep(driver, at(60))
    assert outcome_of(driver, "A-1").outcome == "pending"
    assert cohort(driver).evaluable == 0


# --- point 5: the top arm ------------------------------------------------------------------------------------


def test_the_top_arm_expands_to_six_and_the_recommendation_pages(driver: Driver) -> None:
    start = DAY0
    for arm in ("A", "B"):
        for i in range(1, 4):
            subject_in(driver, f"{arm}-{i}", arm, start=start)
        start += timedelta(days=60)
        sweep(driver, at(0, start=start))
    for i in range(1, 4):
        subject_in(driver, f"C-{i}", "C", start=start)
    out = sweep(driver, at(60, start=start))
    assert ("C", "expand") in decisions(out) and not of_type(out, "dose.recommended")
    start2 = start + timedelta(days=60)
    for i in range(4, 7):
        subject_in(driver, f"C-{i}", "C", start=start2)
    final = sweep(driver, at(60, start=start2))
    [recommended] = of_type(final, "dose.recommended")
    assert (recommended.data.recommended_arm, recommended.data.basis) == ("C", "highest_arm_cleared")
    assert ("C", "recommend") in decisions(final)
    assert of_type(sweep(driver, at(61, start=start2)), "dose.recommended") == [], "signalled once"


# --- point 6: withdrawal and death are not deletion --------------------------------------------------------


def test_a_withdrawn_subject_keeps_their_dlt_and_one_without_is_replaced(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A")
    driver.apply(related_ae("A-1", DAY0 + timedelta(days=5)), now=at(6))
    decide(driver, "A-1", "confirmed", now=at(7))
    driver.apply(subject_status("A-1", "withdrawn", DAY0 + timedelta(days=8)), now=at(8))
    driver.apply(subject_status("A-2", "withdrawn", DAY0 + timedelta(days=8), "consent withdrawn"), now=at(8))
    assert outcome_of(driver, "A-1").outcome == "dlt"
    assert outcome_of(driver, "A-2").outcome == "not_evaluable"
    row = cohort(driver)
    assert (row.dlt_confirmed, row.decision, row.replacements_needed) == (1, "expand", 1)


def test_deleting_an_enrolment_never_removes_a_subjects_dlt_from_the_count(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A")
    driver.apply(related_ae("A-1", DAY0 + timedelta(days=5)), now=at(6))
    decide(driver, "A-1", "confirmed", now=at(7))
    driver.apply(status("A-1", "enrollment", "A-1", "deleted"), now=at(8))
    assert (cohort(driver).dlt_confirmed, cohort(driver).enrolled) == (1, 3)
    assert "still counts" in outcome_of(driver, "A-1").reason


def test_death_without_a_dlt_is_not_dlt_free_and_without_a_fatal_ae_is_flagged(driver: Driver) -> None:
    subject_in(driver, "A-1", "A")
    out = driver.apply(subject_status("A-1", "died", DAY0 + timedelta(days=12)), now=at(12))
    assert outcome_of(driver, "A-1").outcome == "not_evaluable"
    [flag] = of_type(out, "data_quality.flagged")
    assert flag.data.code == "death_without_fatal_ae" and "2026-03-14" in flag.data.detail
    subject_in(driver, "A-2", "A")
    driver.apply(related_ae("A-2", DAY0 + timedelta(days=12), term="Sepsis", grade=5, relatedness="not_related"))
    reported = driver.apply(subject_status("A-2", "died", DAY0 + timedelta(days=12)), now=at(13))
    assert of_type(reported, "data_quality.flagged") == [], "the fatal AE is on record"
    assert outcome_of(driver, "A-2").outcome == "under_review", "its grade 5 is a suspected DLT"


# --- points 7 and 8: the window -------------------------------------------------------------------------------


def test_arm_c_reaction_on_day_30_is_a_suspected_dlt(driver: Driver) -> None:
    subject_in(driver, "C-1", "C")
    out = driver.apply(related_ae("C-1", DAY0 + timedelta(days=30), term="Infusion related reaction"), now=at(31))
    [suspected] = of_type(out, "dlt.suspected")
    assert "study day 30" in suspected.data.reason


def test_the_28th_day_after_a_single_infusion_is_inside_and_the_29th_outside(driver: Driver) -> None:
    subject_in(driver, "A-1", "A")
    assert of_type(driver.apply(related_ae("A-1", DAY0 + timedelta(days=28)), now=at(29)), "dlt.suspected")
    assert not of_type(
        driver.apply(related_ae("A-1", DAY0 + timedelta(days=29), ae_id="AE-2"), now=at(30)), "dlt.suspected"
    )


def test_the_window_ends_at_midnight_of_the_last_dlt_day_at_the_site(driver: Driver) -> None:
    new_york = timezone(timedelta(hours=-5))
    driver.apply(enrol("A-1", "A", DAY0))
    infusion = dose("A-1", datetime(2026, 3, 2, 22, 0, tzinfo=new_york))  # 03:00 UTC on 03-03
    driver.apply(infusion)
    driver.apply(lab("A-1", result_id="W4", test="NEUT", value="2.5", lln="2.0", collected_at=at(28)))
    driver.apply(ae_review("A-1", at(28), visit="week 4"))
    last_moment = datetime(2026, 3, 30, 23, 59, tzinfo=new_york)  # day 28 at the site
    sweep(driver, last_moment)
    assert outcome_of(driver, "A-1").outcome == "pending"
    sweep(driver, datetime(2026, 3, 31, 0, 0, tzinfo=new_york))
    assert outcome_of(driver, "A-1").outcome == "evaluable"


# --- point 9: haematological rules with grade 3-4 baselines ---------------------------------------------------


def neut(subject: str, rid: str, value: str, day: int, *, baseline: bool = False) -> Any:
    return lab(subject, result_id=rid, test="NEUT", value=value, lln="2.0", collected_at=at(day), baseline=baseline)


def plat(subject: str, rid: str, value: str, day: int, *, baseline: bool = False) -> Any:
    return lab(subject, result_id=rid, test="PLAT", value=value, lln="150", collected_at=at(day), baseline=baseline)


def test_grade_4_baseline_neutropenia_persisting_is_not_a_dlt_but_febrile_neutropenia_is(driver: Driver) -> None:
    driver.apply(neut("A-1", "B0", "0.3", -2, baseline=True))
    subject_in(driver, "A-1", "A", visit=False)
    for day in (7, 14, 21):
        assert not of_type(driver.apply(neut("A-1", f"N{day}", "0.2", day)), "dlt.suspected")
    fn = ae("A-1", term="Febrile neutropenia", grade=3, relatedness="not_related", onset=at(15).date().isoformat())
    [suspected] = of_type(driver.apply(fn), "dlt.suspected")
    assert suspected.data.criterion == "febrile_neutropenia"


def test_a_lab_only_platelet_worsening_from_grade_3_is_a_suspected_dlt(driver: Driver) -> None:
    driver.apply(plat("A-1", "P0", "40", -2, baseline=True))  # grade 3
    subject_in(driver, "A-1", "A", visit=False)
    assert not of_type(driver.apply(plat("A-1", "P7", "35", 7)), "dlt.suspected")
    [suspected] = of_type(driver.apply(plat("A-1", "P14", "20", 14)), "dlt.suspected")  # grade 4
    assert suspected.data.ae_id == "lab:Platelet count decreased" and suspected.data.criterion == "haematological"
    assert "1 grade(s) worse than baseline grade 3" in suspected.data.reason


def test_a_new_grade_4_lasting_more_than_14_days_is_a_dlt_even_at_baseline_grade_2(driver: Driver) -> None:
    haem = driver.protocol.dlt.haematological
    assert haem is not None and haem.grade4_max_days == 14
    strict = driver.protocol.dlt.model_copy(
        update={"haematological": haem.model_copy(update={"min_worsening_grades": 3})}
    )  # worsening by 2 grades would not count: only the duration rule can fire
    driver.protocol = driver.protocol.model_copy(update={"dlt": strict})
    driver.apply(neut("A-1", "B0", "1.2", -2, baseline=True))  # grade 2
    subject_in(driver, "A-1", "A", visit=False)
    assert not of_type(driver.apply(neut("A-1", "N5", "0.3", 5)), "dlt.suspected")
    assert not of_type(driver.apply(neut("A-1", "N12", "0.3", 12)), "dlt.suspected")
    [suspected] = of_type(driver.apply(neut("A-1", "N20", "0.3", 20)), "dlt.suspected")
    assert suspected.data.criterion == "haematological_grade4_prolonged" and "15 day(s)" in suspected.data.reason


def test_failure_to_recover_by_day_28(driver: Driver) -> None:
    haem = driver.protocol.dlt.haematological
    assert haem is not None
    only_recovery = haem.model_copy(update={"min_worsening_grades": 4, "grade4_max_days": None})
    driver.protocol = driver.protocol.model_copy(
        update={"dlt": driver.protocol.dlt.model_copy(update={"haematological": only_recovery})}
    )
    driver.apply(neut("A-1", "B0", "0.8", -2, baseline=True))  # grade 3
    subject_in(driver, "A-1", "A", visit=False)
    assert not of_type(driver.apply(neut("A-1", "N7", "0.3", 7)), "dlt.suspected")  # grade 4: worse
    [suspected] = of_type(driver.apply(neut("A-1", "N28", "0.4", 28)), "dlt.suspected")  # still grade 4 on day 28
    assert suspected.data.criterion == "haematological_failure_to_recover"


# --- point 10: terms -----------------------------------------------------------------------------------------


def test_a_verbatim_thrombocytopenia_is_judged_as_a_cytopenia(driver: Driver) -> None:
    driver.apply(plat("A-1", "P0", "20", -2, baseline=True))  # grade 4 at baseline
    subject_in(driver, "A-1", "A", visit=False)
    out = driver.apply(
        related_ae("A-1", DAY0 + timedelta(days=5), term="Thrombocytopenia", grade=4, relatedness="probable")
    )
    assert not of_type(out, "dlt.suspected"), "as a cytopenia, not worse than its grade-4 baseline"


def test_an_unmapped_term_is_a_data_quality_finding(driver: Driver) -> None:
    subject_in(driver, "A-1", "A", visit=False)
    out = driver.apply(related_ae("A-1", DAY0 + timedelta(days=5), term="Felt funny after the bag"))
    [flag] = of_type(out, "data_quality.flagged")
    assert flag.data.code == "unmapped_term" and "maps to no CTCAE" in flag.data.detail
    assert of_type(out, "dlt.suspected"), "still judged by the criteria that name no term (grade 3, possible)"


# --- issue 11: no trial rescan ---------------------------------------------------------------------------------


def statements_for(driver: Driver, envelope: Any) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(driver.engine, "before_cursor_execute", record)
    try:
        driver.apply(envelope, now=at(10))
    finally:
        event.remove(driver.engine, "before_cursor_execute", record)
    return seen


def test_an_event_costs_the_same_whatever_the_size_of_the_trial(driver: Driver) -> None:
    for i in range(3):
        subject_in(driver, f"A-{i}", "A")
    small = statements_for(driver, neut("A-0", "X1", "2.6", 9))
    for i in range(3, 12):
        subject_in(driver, f"A-{i}", "A")
    large = statements_for(driver, neut("A-0", "X2", "2.7", 10))
    assert len(large) == len(small)
    assert not any(
        "FROM safety_subjects" in s and "WHERE safety_subjects.trial_id = ?" in s and "subject_id" not in s
        for s in large
    )
    assert not any("safety_cohorts" in s for s in large), "an unchanged outcome never touches the arms"


def test_the_same_events_in_another_order_end_in_the_same_state(
    driver: Driver, protocol: Protocol, tmp_path: Any
) -> None:
    from shared.db import make_engine

    events = [
        enrol("A-1", "A", DAY0),
        related_ae("A-1", DAY0 + timedelta(days=5)),
        neut("A-1", "B0", "0.8", -2, baseline=True),
        dose("A-1", at(0)),
        subject_status("A-1", "withdrawn", DAY0 + timedelta(days=9)),
        enrol("A-2", "A", DAY0),
        dose("A-2", at(0, 11)),
    ]
    driver.apply_all(events, now=at(10))
    other = make_engine(f"sqlite:///{tmp_path}/reversed.db")
    try:
        replay = Driver(other, protocol)
        replay.apply_all(list(reversed(events)), now=at(10))

        def state(engine: Engine) -> Any:
            with Session(engine) as session:
                outcomes = [(r.subject_id, r.outcome, r.dlt_suspected) for r in session.exec(select(SubjectOutcomeRow))]
                dlts = [(r.dlt_id, r.state) for r in session.exec(select(DltRecord))]
                cohorts = [(r.arm, r.decision, r.enrolled) for r in session.exec(select(CohortState))]
                return sorted(outcomes), sorted(dlts), sorted(cohorts)

        assert state(other) == state(driver.engine)
    finally:
        other.dispose()


# --- more cases from the safety physician ---------------------------------------------------------------------


def test_an_arm_c_subject_stopped_after_one_infusion_because_of_a_dlt_counts_as_a_dlt(driver: Driver) -> None:
    subject_in(driver, "C-1", "C", infusions=1, visit=False)
    driver.apply(related_ae("C-1", DAY0 + timedelta(days=3), term="Anaphylaxis", grade=3), now=at(4))
    decide(driver, "C-1", "confirmed", now=at(5))
    driver.apply(subject_status("C-1", "withdrawn", DAY0 + timedelta(days=6), "dosing stopped for the DLT"), now=at(6))
    row = outcome_of(driver, "C-1")
    assert (row.outcome, row.dlt_confirmed) == ("dlt", 1), "1 of 4 infusions, but a DLT makes the subject evaluable"
    assert cohort(driver, "C").dlt_confirmed == 1


def test_a_withdrawn_subject_whose_suspicion_is_rejected_needs_a_replacement(driver: Driver) -> None:
    subject_in(driver, "A-1", "A")
    driver.apply(related_ae("A-1", DAY0 + timedelta(days=3)), now=at(4))
    driver.apply(subject_status("A-1", "withdrawn", DAY0 + timedelta(days=5)), now=at(5))
    assert outcome_of(driver, "A-1").outcome == "under_review"
    decide(driver, "A-1", "rejected", now=at(6))
    assert outcome_of(driver, "A-1").outcome == "not_evaluable"
    assert cohort(driver).replacements_needed == 1


def test_a_fatal_ae_in_the_window_is_a_dlt_whatever_its_causality(driver: Driver) -> None:
    subject_in(driver, "A-1", "A", visit=False)
    fatal = related_ae("A-1", DAY0 + timedelta(days=12), term="Sepsis", grade=5, relatedness="not_related")
    [suspected] = of_type(driver.apply(fatal, now=at(13)), "dlt.suspected")
    assert suspected.data.criterion == "grade5"


def test_counting_events_does_not_count_a_lab_and_its_ae_twice(driver: Driver) -> None:
    driver.protocol = driver.protocol.model_copy(
        update={"cohort": driver.protocol.cohort.model_copy(update={"count": "events"})}
    )
    driver.apply(plat("A-1", "P0", "40", -2, baseline=True))  # grade 3
    subject_in(driver, "A-1", "A", visit=False)
    driver.apply(plat("A-1", "P9", "20", 9))  # lab-only suspicion: grade 4
    thrombocytopenia = related_ae("A-1", DAY0 + timedelta(days=9), term="Thrombocytopenia", grade=4)
    driver.apply(thrombocytopenia, now=at(10))
    with Session(driver.engine) as session:
        assert len(session.exec(select(DltRecord)).all()) == 2  # both reviewed by the officer
    assert outcome_of(driver, "A-1").dlt_suspected == 1, "one event: the AE and the lab that shows it"
    assert (cohort(driver).decision, cohort(driver).stopping) == ("awaiting_dlt_review", False)


def test_a_database_upgraded_from_before_outcome_rows_is_assessed_by_the_next_sweep(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A")
    with Session(driver.engine) as session, session.begin():
        for row in session.exec(select(SubjectOutcomeRow)).all():
            session.delete(row)
        for cohort_row in session.exec(select(CohortState)).all():
            session.delete(cohort_row)
    out = sweep(driver, at(40))
    assert decisions(out) == [("A", "escalate")]
    assert outcome_of(driver, "A-2").outcome == "evaluable"
