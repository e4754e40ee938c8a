"""The protocol engine through the consumer's service layer on SQLite: every 3+3 path, late and
out-of-order data, follow-up versions, site status changes, and replays that change nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.safety.models import CohortState, DltRecord, Dose, RecordStatus, Subject
from services.safety.protocol_engine import DltAlreadyDecided, decide_dlt, dlt_id_for
from services.safety.sweep import run_sweep
from shared.audit import AuditEntry, verify_chain
from shared.events import DltSuspected, DltWithdrawn, EnvelopeBase, StoppingRuleFired
from shared.protocol import Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, ae, dose, enrol, lab, of_type, status, types

TRIAL = "NCT07212335"
DAY1 = date(2026, 3, 2)
DURING = datetime(2026, 3, 10, 12, tzinfo=UTC)
AFTER = datetime(2026, 4, 15, 12, tzinfo=UTC)  # every window opened in early March has closed


def mechanics(protocol: Protocol) -> Protocol:
    """The shipped protocol read the simplest way (day 1, first-infusion anchor, no required visit, AE-based
    cytopenia rules only), so these tests exercise the engine's mechanics; test_clinical_rules.py covers the
    shipped choices."""
    haem = protocol.dlt.haematological
    assert haem is not None
    dlt = protocol.dlt.model_copy(
        update={
            "anchor": "first_infusion",
            "haematological": haem.model_copy(update={"labs_count": False, "recover_by_day": None}),
        }
    )
    cohort = protocol.cohort.model_copy(update={"evaluable_requires_assessments": []})
    return protocol.model_copy(update={"study_days": "anchor_is_day_1", "dlt": dlt, "cohort": cohort})


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, mechanics(protocol))


def infused(driver: Driver, subject: str, arm: str, day: date = DAY1, now: datetime = DURING) -> list[EnvelopeBase]:
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=10)
    return driver.apply_all([enrol(subject, arm, day), dose(subject, at)], now=now)


def dlt_ae(subject: str, *, onset: str = "2026-03-10", **data: Any) -> Any:
    return ae(subject, onset=onset, relatedness=data.pop("relatedness", "possible"), **data)


def decide(driver: Driver, subject: str, decision: str, *, ae_id: str = "AE-1", now: datetime = DURING) -> list[Any]:
    with Session(driver.engine) as session, session.begin():
        outcome = decide_dlt(
            session,
            protocol=driver.protocol,
            dlt_id=dlt_id_for(TRIAL, subject, ae_id),
            decision=decision,  # type: ignore[arg-type]
            actor="officer@site",
            reason="reviewed the narrative",
            now=now,
            signals_topic=SIGNALS,
        )
    return [o.envelope for o in outcome.signals]


def sweep(driver: Driver, now: datetime = AFTER) -> list[EnvelopeBase]:
    return [o.envelope for o in run_sweep(driver.engine, protocol=driver.protocol, now=now, signals_topic=SIGNALS)]


def cohort(driver: Driver, arm: str = "A") -> CohortState:
    with Session(driver.engine) as session:
        row = session.get(CohortState, (TRIAL, arm))
        assert row is not None
        session.expunge(row)
        return row


def dlt(driver: Driver, subject: str, ae_id: str = "AE-1") -> DltRecord:
    with Session(driver.engine) as session:
        row = session.get(DltRecord, dlt_id_for(TRIAL, subject, ae_id))
        assert row is not None
        session.expunge(row)
        return row


def dlt_types(signals: list[EnvelopeBase]) -> list[str]:
    return [t for t in types(signals) if t.startswith("dlt.")]


def decisions(signals: list[EnvelopeBase]) -> list[tuple[str, str]]:
    return [(s.data.arm, s.data.decision) for s in of_type(signals, "cohort.decision")]


# --- 3+3 paths ---------------------------------------------------------------------------------------


def test_zero_of_three_escalates_once_every_window_has_closed(driver: Driver) -> None:
    signals = [s for subject in ("A-1", "A-2", "A-3") for s in infused(driver, subject, "A")]
    assert decisions(signals) == [("A", "evaluating")]
    assert decisions(sweep(driver, now=DURING + timedelta(days=1))) == []
    before_close = sweep(driver, now=datetime(2026, 3, 29, 23, 59, tzinfo=UTC))
    assert decisions(before_close) == []
    closed = sweep(driver, now=datetime(2026, 3, 30, 0, 0, tzinfo=UTC))  # day 28 has ended at the (UTC) site
    [decision] = of_type(closed, "cohort.decision")
    assert (decision.data.decision, decision.data.previous_decision, decision.data.next_arm) == (
        "escalate",
        "evaluating",
        "B",
    )
    assert (decision.data.enrolled, decision.data.evaluable, decision.data.dlt_confirmed) == (3, 3, 0)
    assert decisions(sweep(driver, now=AFTER)) == [], "an unchanged decision is not signalled again"


def test_one_of_three_then_none_of_three_more_escalates(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    suspected, review = driver.apply(dlt_ae("A-1"), now=DURING)
    assert isinstance(suspected, DltSuspected)
    assert review.data.decision == "awaiting_dlt_review"  # type: ignore[attr-defined]
    assert suspected.data.criterion == "non_haematological_grade3"
    assert suspected.data.window_start == datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert suspected.data.window_end == datetime(2026, 3, 30, tzinfo=UTC)
    assert suspected.data.arm == "A"
    assert decisions(decide(driver, "A-1", "confirmed")) == [("A", "expand")]
    for subject in ("A-4", "A-5", "A-6"):
        infused(driver, subject, "A", day=date(2026, 4, 1), now=datetime(2026, 4, 2, tzinfo=UTC))
    assert cohort(driver).decision == "evaluating"
    assert decisions(sweep(driver, now=datetime(2026, 4, 20, tzinfo=UTC))) == []  # A-4..6 still in observation
    assert decisions(sweep(driver, now=datetime(2026, 5, 1, tzinfo=UTC))) == [("A", "escalate")]
    assert (cohort(driver).dlt_confirmed, cohort(driver).evaluable) == (1, 6)


def test_one_of_three_then_one_of_three_more_stops(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    driver.apply(dlt_ae("A-1"), now=DURING)
    decide(driver, "A-1", "confirmed")
    for subject in ("A-4", "A-5", "A-6"):
        infused(driver, subject, "A", day=date(2026, 4, 1), now=datetime(2026, 4, 2, tzinfo=UTC))
    second = driver.apply(dlt_ae("A-5", onset="2026-04-10"), now=datetime(2026, 4, 11, tzinfo=UTC))
    assert types(second) == ["dlt.suspected", "cohort.decision", "stopping_rule.fired"], "fires at once"
    fired = second[2]
    assert isinstance(fired, StoppingRuleFired)
    assert (fired.data.dlt_confirmed, fired.data.dlt_suspected) == (1, 1)
    assert "stopping rule reached with suspected DLTs" in fired.data.reason
    assert cohort(driver).decision == "hold", "held until the review ends, never escalated"
    assert decisions(decide(driver, "A-5", "confirmed", now=datetime(2026, 4, 12, tzinfo=UTC))) == [("A", "stop")]
    assert cohort(driver).decision == "stop"


def test_two_of_three_fires_the_stopping_rule_and_stops_on_confirmation(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    assert types(driver.apply(dlt_ae("A-1"))) == ["dlt.suspected", "cohort.decision"]
    assert types(driver.apply(dlt_ae("A-2", term="Infusion related reaction", onset="2026-03-02"))) == [
        "acute_reaction.detected",  # onset on the infusion day, grade 3: an acute reaction as well
        "dlt.suspected",
        "cohort.decision",
        "stopping_rule.fired",
    ]
    assert cohort(driver).decision == "hold"
    assert decisions(decide(driver, "A-1", "confirmed")) == [], "still on hold: A-2 is under review"
    assert decisions(decide(driver, "A-2", "confirmed")) == [("A", "stop")]
    assert (cohort(driver).dlt_confirmed, cohort(driver).dlt_suspected, cohort(driver).stopping) == (2, 0, True)


def test_a_rejected_suspicion_leaves_the_cohort_at_zero(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    driver.apply(dlt_ae("A-1"))
    assert decide(driver, "A-1", "rejected") and dlt(driver, "A-1").state == "rejected"
    assert decisions(sweep(driver)) == [("A", "escalate")]
    with pytest.raises(DltAlreadyDecided):
        decide(driver, "A-1", "confirmed")
    assert decide(driver, "A-1", "rejected") == [], "the same decision again changes nothing"


def test_withdrawn_suspicions_re_arm_the_stopping_rule(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    driver.apply(dlt_ae("A-1"))
    assert "stopping_rule.fired" in types(driver.apply(dlt_ae("A-2")))
    assert dlt_types(driver.apply(dlt_ae("A-2", version=2, relatedness="not_related"))) == ["dlt.withdrawn"]
    assert not cohort(driver).stopping and cohort(driver).decision == "awaiting_dlt_review"
    again = driver.apply(dlt_ae("A-3", ae_id="AE-9"))
    assert types(again) == ["dlt.suspected", "cohort.decision", "stopping_rule.fired"]
    fired = of_type([o.envelope for o in driver.signals], "stopping_rule.fired")
    assert len({s.id for s in fired}) == 2, "each firing is its own signal"


# --- enrolment deviations ----------------------------------------------------------------------------


def test_enrolment_before_the_predecessor_cleared_is_a_deviation_and_the_subject_is_stored(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    [deviation] = driver.apply(enrol("B-1", "B", date(2026, 3, 9)))
    assert deviation.type == "protocol.deviation"
    assert deviation.data.kind == "enrolled_before_predecessor_cleared"  # type: ignore[attr-defined]
    with Session(driver.engine) as session:
        assert session.get(Subject, (TRIAL, "B-1")).arm == "B"  # type: ignore[union-attr]
    assert driver.apply(enrol("B-1", "B", date(2026, 3, 9), sender="resent")) == [], "re-sent: no second flag"


def test_enrolment_after_the_predecessor_cleared_is_not_a_deviation(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    sweep(driver, now=datetime(2026, 4, 1, tzinfo=UTC))
    assert driver.apply(enrol("B-1", "B", date(2026, 4, 1)), now=datetime(2026, 4, 2, tzinfo=UTC)) == []


def test_the_deviation_check_judges_the_arms_as_of_the_enrolment_day(driver: Driver) -> None:
    """Replayed months later, an enrolment on 2026-03-20 is still judged against arm A as it was then."""
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    late = driver.apply(enrol("B-1", "B", date(2026, 3, 20)), now=datetime(2026, 9, 1, tzinfo=UTC))
    assert types(late)[:1] == ["protocol.deviation"]


# --- late, out-of-order and corrected data ----------------------------------------------------------


def test_an_ae_before_its_infusion_is_reassessed_when_the_infusion_arrives(driver: Driver) -> None:
    driver.apply(enrol("A-1", "A", DAY1))
    assert driver.apply(dlt_ae("A-1")) == [], "no window yet"
    _no_dlt_record(driver)
    infusion = dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC))
    [suspected] = of_type(driver.apply(infusion), "dlt.suspected")
    assert isinstance(suspected, DltSuspected)
    assert suspected.data.source_event_id == infusion.id
    assert "study day 9" in suspected.data.reason


def _no_dlt_record(driver: Driver) -> None:
    with Session(driver.engine) as session:
        assert session.exec(select(DltRecord)).first() is None


def test_an_earlier_infusion_moves_the_window_and_withdraws(driver: Driver) -> None:
    driver.apply(enrol("A-1", "A", DAY1))
    driver.apply(dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC), number=2))
    assert dlt_types(driver.apply(dlt_ae("A-1", onset="2026-03-25"))) == ["dlt.suspected"]  # day 24
    # the site enters the real first infusion, a week earlier: onset becomes day 31
    [withdrawn] = of_type(driver.apply(dose("A-1", datetime(2026, 2, 23, 10, tzinfo=UTC), number=1)), "dlt.withdrawn")
    assert isinstance(withdrawn, DltWithdrawn)
    assert "study day 31" in withdrawn.data.reason


def test_an_infusion_entered_in_error_moves_the_anchor(driver: Driver) -> None:
    driver.apply(enrol("A-1", "A", DAY1))
    driver.apply(dose("A-1", datetime(2026, 2, 1, 10, tzinfo=UTC), number=1))  # wrong date
    driver.apply(dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC), number=2))
    assert driver.apply(dlt_ae("A-1")) == [], "onset is day 38 of the wrong window"
    assert dlt_types(driver.apply(status("A-1", "dose", "A-1-D1"))) == ["dlt.suspected"]


def test_follow_up_versions_move_the_suspicion(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    assert driver.apply(dlt_ae("A-1", version=1, grade=2)) == []
    assert dlt_types(driver.apply(dlt_ae("A-1", version=2, grade=3))) == ["dlt.suspected"]
    assert dlt_types(driver.apply(dlt_ae("A-1", version=3, grade=3, relatedness="not_related"))) == ["dlt.withdrawn"]
    assert dlt_types(driver.apply(dlt_ae("A-1", version=4, grade=3, relatedness="probable"))) == ["dlt.suspected"]
    assert dlt(driver, "A-1").revision == 3
    decide(driver, "A-1", "confirmed")
    out = driver.apply(dlt_ae("A-1", version=5, grade=3, relatedness="not_related"))
    assert dlt(driver, "A-1").state == "confirmed", "an officer's confirmation stands"
    assert [(s.type, s.data.code) for s in out] == [("data_quality.flagged", "decided_dlt_data_changed")], (
        "and its officers are told the data it relied on changed (dlt_decision_basis)"
    )


def test_a_lower_grade_in_a_follow_up_does_not_withdraw(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    driver.apply(dlt_ae("A-1", version=1, grade=3))
    assert driver.apply(dlt_ae("A-1", version=2, grade=1, outcome="recovering")) == []
    assert (dlt(driver, "A-1").state, dlt(driver, "A-1").grade) == ("suspected", 3)


def test_versions_out_of_order_end_in_the_latest_versions_state(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    assert driver.apply(dlt_ae("A-1", version=2, grade=3, relatedness="not_related")) == []
    assert driver.apply(dlt_ae("A-1", version=1, grade=3, relatedness="probable")) == [], "v2 is still the latest"


def test_a_rejected_dlt_reopens_only_when_graded_worse(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    driver.apply(dlt_ae("A-1", version=1, grade=3))
    decide(driver, "A-1", "rejected")
    assert driver.apply(dlt_ae("A-1", version=2, grade=3, outcome="ongoing")) == []
    assert dlt_types(driver.apply(dlt_ae("A-1", version=3, grade=4))) == ["dlt.suspected"]
    assert decisions(decide(driver, "A-1", "confirmed")) == [("A", "expand")]


def test_an_ae_entered_in_error_withdraws_and_restored_comes_back(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    driver.apply(dlt_ae("A-1"))
    [withdrawn] = of_type(driver.apply(status("A-1", "ae", "AE-1")), "dlt.withdrawn")
    assert isinstance(withdrawn, DltWithdrawn) and "entered in error" in withdrawn.data.reason
    with Session(driver.engine) as session:
        [row] = session.exec(select(RecordStatus)).all()
        assert (row.record_type, row.record_id, row.status) == ("ae", "AE-1", "entered_in_error")
    assert dlt_types(driver.apply(status("A-1", "ae", "AE-1", "restored"))) == ["dlt.suspected"]
    assert dlt_types(driver.apply(status("A-1", "ae", "AE-1", "deleted"))) == ["dlt.withdrawn"]


def test_a_confirmed_dlt_survives_its_ae_being_deleted(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    driver.apply(dlt_ae("A-1"))
    decide(driver, "A-1", "confirmed")
    out = driver.apply(status("A-1", "ae", "AE-1", "deleted"))
    assert [(s.type, s.data.code) for s in out] == [("data_quality.flagged", "confirmed_dlt_ae_retracted")]
    assert dlt(driver, "A-1").state == "confirmed"  # the officer is told (above); the confirmation stands


def test_an_enrolment_entered_in_error_leaves_the_cohort_only_without_infusion_or_dlt(driver: Driver) -> None:
    for subject in ("A-1", "A-2"):
        infused(driver, subject, "A")
    driver.apply(enrol("A-3", "A", DAY1))
    assert decisions(driver.apply(status("A-3", "enrollment", "A-3"))) == [("A", "enrolling")]
    assert cohort(driver).enrolled == 2
    driver.apply(dlt_ae("A-2"))
    driver.apply(status("A-2", "enrollment", "A-2"))  # deleted at the site: an infused subject with a DLT counts
    assert (cohort(driver).enrolled, cohort(driver).dlt_suspected) == (2, 1)


def test_cytopenia_at_baseline_is_not_a_dlt_and_a_late_baseline_withdraws(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    neutropenia = {"term": "Neutrophil count decreased", "grade": 4, "relatedness": "not_related"}
    assert dlt_types(driver.apply(dlt_ae("A-1", **neutropenia))) == ["dlt.suspected"]  # no baseline known yet
    baseline = lab(
        "A-1",
        result_id="R-0",
        test="NEUT",
        value="0.3",
        lln="2.0",
        collected_at=datetime(2026, 2, 28, tzinfo=UTC),
        baseline=True,
    )
    [withdrawn] = of_type(driver.apply(baseline), "dlt.withdrawn")
    assert isinstance(withdrawn, DltWithdrawn)
    assert "baseline grade 4" in withdrawn.data.reason
    # the baseline was entered in error: the suspicion comes back
    assert dlt_types(driver.apply(status("A-1", "lab", "R-0"))) == ["dlt.suspected"]


def test_cytopenia_worse_than_baseline_is_a_dlt(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    driver.apply(
        lab(
            "A-1",
            result_id="R-0",
            test="PLAT",
            value="40",
            lln="150",
            collected_at=datetime(2026, 2, 28, tzinfo=UTC),
            baseline=True,
        )
    )
    platelets = {"term": "Platelet count decreased", "relatedness": "not_related"}
    assert driver.apply(dlt_ae("A-1", grade=3, **platelets)) == []
    [suspected] = of_type(driver.apply(dlt_ae("A-1", version=2, grade=4, **platelets)), "dlt.suspected")
    assert suspected.data.criterion == "haematological"  # type: ignore[attr-defined]


# --- replay ------------------------------------------------------------------------------------------


def scenario() -> list[Any]:
    return [
        enrol("A-1", "A", DAY1),
        dlt_ae("A-1", ae_id="AE-early"),  # before the infusion
        dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC)),
        enrol("A-2", "A", DAY1),
        dose("A-2", datetime(2026, 3, 2, 11, tzinfo=UTC)),
        dlt_ae("A-2", version=1, grade=2),
        dlt_ae("A-2", version=2, grade=3),
        enrol("A-3", "A", DAY1),
        dose("A-3", datetime(2026, 3, 2, 12, tzinfo=UTC)),
        dlt_ae("A-3", ae_id="AE-x", term="Anaphylaxis", grade=3, onset="2026-03"),
        status("A-2", "ae", "AE-1"),
        enrol("B-1", "B", date(2026, 3, 5)),
        lab("A-1", result_id="R-1", test="NEUT", value="0.3", lln="2.0", collected_at=datetime(2026, 3, 9, tzinfo=UTC)),
    ]


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with Session(engine) as session:
        return {
            "dlts": [
                (r.dlt_id, r.state, r.criterion, r.grade, r.ae_version, r.revision, r.reason)
                for r in session.exec(select(DltRecord).order_by(col(DltRecord.dlt_id)))
            ],
            "cohorts": [
                (r.arm, r.decision, r.stopping, r.enrolled, r.evaluable, r.dlt_confirmed, r.dlt_suspected, r.revision)
                for r in session.exec(select(CohortState).order_by(col(CohortState.arm)))
            ],
            "statuses": [(r.record_type, r.record_id, r.status) for r in session.exec(select(RecordStatus))],
        }


def test_replaying_every_event_twice_changes_nothing_and_signals_nothing(driver: Driver) -> None:
    first = driver.apply_all(scenario())
    assert sorted(set(types(first))) == [
        "cohort.decision",
        "dlt.suspected",
        "dlt.withdrawn",
        "lab.toxicity",
        "protocol.deviation",
        "stopping_rule.fired",
    ]
    state = snapshot(driver.engine)
    assert driver.apply_all(scenario()) == []
    assert snapshot(driver.engine) == state


def test_a_replay_into_a_fresh_database_gives_the_same_state_and_signal_ids(
    driver: Driver, protocol: Protocol, tmp_path: Any
) -> None:
    from shared.db import make_engine

    first = driver.apply_all(scenario())
    other_engine = make_engine(f"sqlite:///{tmp_path}/replay.db")
    try:
        replay = Driver(other_engine, driver.protocol)
        second = replay.apply_all(scenario())
        assert [s.id for s in second] == [s.id for s in first]
        assert snapshot(other_engine) == snapshot(driver.engine)
    finally:
        other_engine.dispose()


def test_every_transition_is_in_the_audit_chain(driver: Driver) -> None:
    driver.apply_all(scenario())
    decide(driver, "A-3", "confirmed", ae_id="AE-x")
    with Session(driver.engine) as session:
        actions = [row.action for row in session.exec(select(AuditEntry).order_by(col(AuditEntry.seq)))]
    assert actions.count("dlt.suspected") == 3
    assert actions.count("dlt.withdrawn") == 1
    assert "dlt.confirmed" in actions and "cohort.decision" in actions
    count, problems = verify_chain(driver.engine, service="safety")
    assert count == len(actions) and problems == []


# --- corrections, statuses before records, and enrolment over the cohort size ------------------------


def neut(result_id: str, value: str, *, at: datetime, baseline: bool = False, sender: str | None = None) -> Any:
    envelope = lab("A-1", result_id=result_id, test="NEUT", value=value, lln="2.0", collected_at=at, baseline=baseline)
    if sender is None:
        return envelope
    return envelope.model_copy(update={"id": f"{envelope.id}-{sender}", "senderid": sender})


def audit_rows(driver: Driver, action: str) -> list[AuditEntry]:
    with Session(driver.engine) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def test_a_re_sent_identical_dose_is_a_no_op_and_a_correction_is_audited(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    original = dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC))
    resent = original.model_copy(update={"id": f"{original.id}-resent", "senderid": "resent"})
    assert driver.apply(resent) == [] and audit_rows(driver, "dose.corrected") == []
    corrected = original.model_copy(
        update={
            "id": f"{original.id}-fixed",
            "senderid": "fixed",
            "data": original.data.model_copy(update={"administered_at": datetime(2026, 3, 3, 9, tzinfo=UTC)}),
        }
    )
    driver.apply(corrected)
    [entry] = audit_rows(driver, "dose.corrected")
    assert entry.entity == f"dose/{TRIAL}/A-1/A-1-D1"
    assert entry.detail["before"] == {"administered_at": "2026-03-02 10:00:00+00:00", "administered_on": "2026-03-02"}
    assert entry.detail["after"] == {"administered_at": "2026-03-03 09:00:00+00:00", "administered_on": "2026-03-03"}
    assert entry.detail["source_event_id"] == corrected.id
    with Session(driver.engine) as session:
        stored = session.get(Dose, (TRIAL, "A-1", "A-1-D1"))
        assert stored is not None and stored.administered_on == date(2026, 3, 3)
    _, problems = verify_chain(driver.engine, service="safety")
    assert problems == []


def test_a_corrected_lab_value_pages_when_worse_and_re_sending_it_does_not(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    assert driver.apply(neut("R-1", "1.2", at=datetime(2026, 3, 5, tzinfo=UTC))) == []  # grade 2: below threshold
    corrected = neut("R-1", "0.3", at=datetime(2026, 3, 5, tzinfo=UTC), sender="corrected")  # grade 4
    [page] = of_type(driver.apply(corrected), "lab.toxicity")
    assert (page.data.result_id, page.data.grade, page.data.value) == ("R-1", 4, "0.3")
    [entry] = audit_rows(driver, "lab.corrected")
    assert entry.detail["before"]["value"] == "1.2" and entry.detail["after"]["value"] == "0.3"
    assert entry.detail["before"]["grade"] == 2 and entry.detail["after"]["grade"] == 4
    assert driver.apply(neut("R-1", "0.3", at=datetime(2026, 3, 5, tzinfo=UTC), sender="again")) == []
    assert len(audit_rows(driver, "lab.corrected")) == 1


def test_a_lab_corrected_to_a_normal_value_no_longer_silences_the_next_result(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    assert types(driver.apply(neut("R-1", "0.3", at=datetime(2026, 3, 5, tzinfo=UTC)))) == ["lab.toxicity"]
    [withdrawn] = driver.apply(neut("R-1", "3.0", at=datetime(2026, 3, 5, tzinfo=UTC), sender="corrected"))
    assert withdrawn.type == "lab.toxicity_withdrawn", "the officer paged for grade 4 hears that it no longer stands"
    assert (withdrawn.data.withdrawn_grade, withdrawn.data.standing_grade) == (4, None)
    assert "0.3 10^9/L -> 3.0 10^9/L" in withdrawn.data.why
    assert types(driver.apply(neut("R-2", "0.4", at=datetime(2026, 3, 9, tzinfo=UTC)))) == ["lab.toxicity"]


def test_a_lab_restored_after_its_status_arrived_first_pages_then(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    driver.apply(status("A-1", "lab", "R-1"))
    assert driver.apply(neut("R-1", "0.3", at=datetime(2026, 3, 9, tzinfo=UTC))) == []
    restored = status("A-1", "lab", "R-1", "restored")
    [page] = of_type(driver.apply(restored), "lab.toxicity")
    assert (page.data.result_id, page.data.grade, page.data.source_event_id) == ("R-1", 4, restored.id)


def test_a_retracted_baseline_pages_the_result_it_had_masked_once(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    driver.apply(neut("R-0", "0.3", at=datetime(2026, 2, 28, tzinfo=UTC), baseline=True))  # grade 4 at baseline
    assert driver.apply(neut("R-1", "0.4", at=datetime(2026, 3, 5, tzinfo=UTC))) == [], "not worse than baseline"
    retraction = status("A-1", "lab", "R-0")
    [page] = of_type(driver.apply(retraction), "lab.toxicity")
    assert (page.data.result_id, page.data.grade, page.data.baseline_grade) == ("R-1", 4, None)
    assert driver.apply(neut("R-2", "0.45", at=datetime(2026, 3, 9, tzinfo=UTC))) == [], "already paged at grade 4"


def test_retracting_one_of_two_paged_results_keeps_the_other_as_what_was_paged(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    assert types(driver.apply(neut("R-1", "0.8", at=datetime(2026, 3, 5, tzinfo=UTC)))) == ["lab.toxicity"]  # 3
    assert types(driver.apply(neut("R-2", "0.3", at=datetime(2026, 3, 6, tzinfo=UTC)))) == ["lab.toxicity"]  # 4
    assert of_type(driver.apply(status("A-1", "lab", "R-2")), "lab.toxicity") == [], "grade 3 was already paged"
    assert driver.apply(neut("R-3", "0.9", at=datetime(2026, 3, 7, tzinfo=UTC))) == [], "grade 3 again"
    assert types(driver.apply(neut("R-4", "0.4", at=datetime(2026, 3, 8, tzinfo=UTC)))) == ["lab.toxicity"]


def test_a_fourth_subject_in_an_arm_at_zero_of_three_is_a_deviation(driver: Driver) -> None:
    for subject in ("A-1", "A-2", "A-3"):
        infused(driver, subject, "A")
    sweep(driver, now=datetime(2026, 4, 1, tzinfo=UTC))  # 0/3: arm A escalates to B
    fourth = driver.apply(enrol("A-4", "A", date(2026, 4, 2)), now=datetime(2026, 4, 2, 9, tzinfo=UTC))
    [deviation] = of_type(fourth, "protocol.deviation")
    assert deviation.data.kind == "over_cohort_size"
    assert "no decision to expand" in deviation.data.detail


def test_an_sae_version_arriving_late_with_earlier_awareness_signals_the_earlier_clock(driver: Driver) -> None:
    infused(driver, "A-1", "A")
    received = datetime(2026, 4, 24, 9, tzinfo=UTC)  # the reports arrive after the site's awareness
    serious = {"seriousness": {"hospitalization": True}, "onset": "2026-04-20", "received": received}
    v2 = ae("A-1", version=2, awareness_at="2026-04-23T06:00:00+00:00", **serious)
    v1 = ae("A-1", version=1, awareness_at="2026-04-21T06:00:00+00:00", **serious)
    [detected] = of_type(driver.apply(v2), "sae.detected")
    [updated] = of_type(driver.apply(v1), "sae.updated")
    assert detected.data.awareness_at == datetime(2026, 4, 23, 6, tzinfo=UTC)
    assert updated.data.awareness_at == datetime(2026, 4, 21, 6, tzinfo=UTC)
    assert updated.data.awareness_basis == "site"
