"""A safety physician tries to break the revision of a decided DLT (a review committee re-adjudicates it, or an
officer corrects a slip) with the cases a safety review committee meets: a stop lifted, an arm reopened after
escalation and after the dose was recommended, evaluability and replacements, the AE changed under the decision,
two officers at once, and the audit trail an inspector reads."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.safety.dlt import DltState
from services.safety.main import create_app
from services.safety.models import DltRecord
from services.safety.protocol_engine import DltAlreadyDecided, DltStateChanged, decide_dlt, dlt_id_for
from services.safety.settings import SafetySettings
from shared.audit import AuditEntry, verify_chain
from shared.clock import FakeClock
from shared.events import EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, enrol, of_type, status, types
from tests.unit.safety.test_clinical_rules import (
    DAY0,
    TRIAL,
    at,
    cohort,
    decisions,
    neut,
    outcome_of,
    related_ae,
    subject_in,
    subject_status,
    sweep,
)


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def decide(
    driver: Driver,
    subject: str,
    decision: str,
    *,
    expected: str | None = None,
    actor: str = "olga",
    reason: str = "reviewed",
    now: datetime | None = None,
    ae_id: str = "AE-1",
) -> list[Any]:
    with Session(driver.engine) as session, session.begin():
        outcome = decide_dlt(
            session,
            protocol=driver.protocol,
            dlt_id=dlt_id_for(TRIAL, subject, ae_id),
            decision=decision,  # type: ignore[arg-type]
            actor=actor,
            reason=reason,
            now=now or at(12),
            signals_topic=SIGNALS,
            expected_state=DltState(expected) if expected else None,
        )
    return [o.envelope for o in outcome.signals]


def record(driver: Driver, subject: str, ae_id: str = "AE-1") -> DltRecord:
    with Session(driver.engine) as session:
        row = session.get(DltRecord, dlt_id_for(TRIAL, subject, ae_id))
        assert row is not None
        session.expunge(row)
        return row


def trail(engine: Engine, entity: str | None = None) -> list[AuditEntry]:
    with Session(engine) as session:
        query = select(AuditEntry).where(col(AuditEntry.service) == "safety").order_by(col(AuditEntry.seq))
        rows = [e for e in session.exec(query).all() if entity is None or e.entity == entity]
        for row in rows:
            session.expunge(row)
        return rows


def recommended(signals: list[EnvelopeBase]) -> list[tuple[str | None, str]]:
    return [(s.data.recommended_arm, s.data.basis) for s in of_type(signals, "dose.recommended")]


def three_in_a(driver: Driver, *dlts: str) -> None:
    """Arm A's three subjects, followed to the week-4 visit; each of `dlts` with a related grade 3 pneumonitis."""
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A")
    for subject in dlts:
        driver.apply(related_ae(subject, DAY0 + timedelta(days=9)), now=at(10))


# --- the arm's 3+3 moves back, and people are told through the cohort signals ---------------------------------


def test_revising_one_of_two_confirmed_dlts_lifts_the_stop_and_the_no_tolerated_dose_verdict(driver: Driver) -> None:
    three_in_a(driver, "A-1", "A-2")
    decide(driver, "A-1", "confirmed", now=at(11))
    stopped = decide(driver, "A-2", "confirmed", now=at(11))
    assert decisions(stopped) == [("A", "stop")] and recommended(stopped) == [(None, "no_tolerated_dose")]

    src = "SRC 2026-04-02: A-2's pneumonitis is CMV on BAL, not the product"
    out = decide(driver, "A-2", "rejected", expected="confirmed", actor="dr.src", reason=src, now=at(31))
    [change] = of_type(out, "cohort.decision")
    assert (change.data.previous_decision, change.data.decision, change.data.stopping) == ("stop", "expand", False)
    assert (change.data.dlt_confirmed, change.data.dlt_suspected) == (1, 0)
    assert "stopping_rule.fired" not in types(out)
    assert recommended(out) == [(None, "withdrawn")], "'no dose tolerated' no longer holds: the trial is told"
    assert (cohort(driver).decision, cohort(driver).stopping) == ("expand", False)
    assert outcome_of(driver, "A-2").outcome == "evaluable", "window closed, week-4 visit done: DLT-free now"

    again = "SRC: CMV excluded"
    back = decide(driver, "A-2", "confirmed", expected="rejected", actor="dr.src", reason=again, now=at(45))
    assert decisions(back) == [("A", "stop")]
    assert "stopping_rule.fired" in types(back), "the stopping rule fires again and opens its review again"
    assert recommended(back) == [(None, "no_tolerated_dose")]
    ids = [s.id for s in [*stopped, *out, *back] if s.type in ("cohort.decision", "stopping_rule.fired")]
    assert len(ids) == len(set(ids)), "each move is its own signal, none dropped as a replay"


def test_revising_a_confirmed_dlt_of_a_held_arm_lifts_the_hold_to_awaiting_review(driver: Driver) -> None:
    three_in_a(driver, "A-1", "A-2")
    decide(driver, "A-1", "confirmed", now=at(11))
    assert (cohort(driver).decision, cohort(driver).stopping) == ("hold", True), "1 confirmed + 1 suspected"
    out = decide(driver, "A-1", "rejected", expected="confirmed", reason="slip: meant A-2's file", now=at(12))
    assert decisions(out) == [("A", "awaiting_dlt_review")]
    arm = cohort(driver)
    assert (arm.stopping, arm.dlt_confirmed, arm.dlt_suspected, arm.under_review) == (False, 0, 1, 1)
    assert "if confirmed: expand; if rejected: evaluating" in arm.reason, "windows still open"


def test_a_dlt_confirmed_on_revision_after_escalation_reopens_the_arm_and_flags_the_next_enrolment(
    driver: Driver,
) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="pre-existing interstitial disease", now=at(11))
    assert decisions(sweep(driver, at(40))) == [("A", "escalate")]
    for subject in ("B-1", "B-2"):
        subject_in(driver, subject, "B", start=DAY0 + timedelta(days=41))

    src = "SRC 2026-04-20: CT review shows new pneumonitis, possibly related"
    out = decide(driver, "A-1", "confirmed", expected="rejected", actor="dr.src", reason=src, now=at(60))
    [change] = of_type(out, "cohort.decision")
    assert (change.data.arm, change.data.previous_decision, change.data.decision) == ("A", "escalate", "expand")
    assert "expand to 6" in change.data.reason
    assert outcome_of(driver, "A-1").outcome == "dlt"
    deviations = of_type(driver.apply(enrol("B-3", "B", DAY0 + timedelta(days=61)), now=at(61)), "protocol.deviation")
    assert [d.data.kind for d in deviations] == ["enrolled_before_predecessor_cleared"]
    assert "expand" in deviations[0].data.detail


def test_a_dlt_confirmed_on_revision_withdraws_the_recommended_dose(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="pre-existing interstitial disease", now=at(11))
    for subject in ("B-1", "B-2", "B-3"):
        subject_in(driver, subject, "B")
    for n in range(1, 7):
        subject_in(driver, f"C-{n}", "C")
    assert recommended(sweep(driver, at(60))) == [("C", "highest_arm_cleared")]

    out = decide(driver, "A-1", "confirmed", expected="rejected", reason="SRC re-adjudicated", now=at(70))
    assert decisions(out) == [("A", "expand"), ("C", "escalate")], "C cleared, but is no longer the recommended dose"
    assert recommended(out) == [(None, "withdrawn")], "the recommended dose rested on arm A's 0/3"


# --- the subject's place in the count -----------------------------------------------------------------------


def test_a_subject_whose_dlt_is_revised_to_rejected_must_finish_the_window_to_count(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    assert outcome_of(driver, "A-1").outcome == "dlt"
    decide(driver, "A-1", "rejected", expected="confirmed", reason="SRC: not a DLT", now=at(12))
    row = outcome_of(driver, "A-1")
    assert (row.outcome, row.dlt_confirmed) == ("pending", 0), "no DLT, window open: not yet DLT-free"
    assert row.changes_at is not None, "the sweep will look again when the window closes"
    assert cohort(driver).decision == "evaluating"
    assert decisions(sweep(driver, at(40))) == [("A", "escalate")]
    assert outcome_of(driver, "A-1").outcome == "evaluable"


def test_a_subject_who_left_the_study_after_a_dlt_revised_to_rejected_must_be_replaced(driver: Driver) -> None:
    for subject in ("C-1", "C-2", "C-3"):
        subject_in(driver, subject, "C")
    driver.apply(related_ae("C-1", DAY0 + timedelta(days=9), ae_id="AE-1"), now=at(10))
    decide(driver, "C-1", "confirmed", now=at(11))
    driver.apply(subject_status("C-1", "withdrawn", DAY0 + timedelta(days=12), "toxicity"), now=at(12))
    assert outcome_of(driver, "C-1").outcome == "dlt", "a DLT counts whatever follows"

    decide(driver, "C-1", "rejected", expected="confirmed", reason="SRC: progression, not a DLT", now=at(20))
    row = outcome_of(driver, "C-1")
    assert row.outcome == "not_evaluable" and "needs a replacement" in row.reason
    arm = cohort(driver, "C")
    assert (arm.not_evaluable, arm.replacements_needed, arm.dlt_confirmed) == (1, 1, 0)


# --- the AE moves under the decision --------------------------------------------------------------------------


def test_a_rejection_on_revision_is_reopened_only_by_new_evidence(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    decide(driver, "A-1", "rejected", expected="confirmed", reason="SRC: CMV pneumonitis", now=at(12))
    same = driver.apply(related_ae("A-1", DAY0 + timedelta(days=9), version=2, relatedness="probable"), now=at(13))
    assert "dlt.suspected" not in types(same) and record(driver, "A-1").state == "rejected"
    worse = driver.apply(related_ae("A-1", DAY0 + timedelta(days=9), version=3, grade=4), now=at(14))
    assert "dlt.suspected" in types(worse), "graded worse than the committee judged it: reviewed again"
    assert record(driver, "A-1").state == "suspected" and cohort(driver).decision == "awaiting_dlt_review"
    with pytest.raises(DltStateChanged):  # the officer's page said rejected: it is an open suspicion now
        decide(driver, "A-1", "confirmed", expected="rejected", now=at(15))
    decide(driver, "A-1", "confirmed", expected="suspected", now=at(15))
    assert [e.action for e in trail(driver.engine, f"dlt/{record(driver, 'A-1').dlt_id}")][-1] == "dlt.confirmed"


def test_a_confirmed_dlt_whose_ae_the_site_retracted_is_revised_to_rejected_and_stays_so(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    finding = driver.apply(status("A-1", "ae", "AE-1"), now=at(12))
    assert [f.data.code for f in of_type(finding, "data_quality.flagged")] == ["confirmed_dlt_ae_retracted"]
    assert cohort(driver).dlt_confirmed == 1, "still counts until a person decides"
    out = decide(driver, "A-1", "rejected", expected="confirmed", reason="site: AE entered on the wrong subject")
    assert decisions(out) == [("A", "evaluating")] and cohort(driver).dlt_confirmed == 0, "windows still open"
    restored = driver.apply(status("A-1", "ae", "AE-1", "restored"), now=at(13))
    assert "dlt.suspected" not in types(restored), "the same AE at the same grade: the committee's rejection stands"
    assert record(driver, "A-1").state == "rejected"


def test_a_withdrawn_dlt_decided_for_the_first_time_is_not_a_revision(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    driver.apply(related_ae("A-1", DAY0 + timedelta(days=9), version=2, relatedness="not_related"), now=at(11))
    assert record(driver, "A-1").state == "withdrawn"
    out = decide(driver, "A-1", "rejected", expected="withdrawn", reason="agree: unrelated", now=at(12))
    [decided] = of_type(out, "dlt.decided")
    assert decided.data.revises is None
    assert trail(driver.engine, f"dlt/{record(driver, 'A-1').dlt_id}")[-1].action == "dlt.rejected"


def test_a_revision_to_confirmed_of_a_retracted_ae_waits_for_the_site_to_restore_it(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "rejected", reason="pre-existing", now=at(11))
    driver.apply(status("A-1", "ae", "AE-1"), now=at(12))
    with pytest.raises(DltStateChanged, match=r"marked AE AE-1 entered in error.*restore the AE"):
        decide(driver, "A-1", "confirmed", expected="rejected", reason="SRC: it is a DLT", now=at(13))
    assert record(driver, "A-1").state == "rejected"
    driver.apply(status("A-1", "ae", "AE-1", "restored"), now=at(14))
    out = decide(driver, "A-1", "confirmed", expected="rejected", reason="SRC: it is a DLT", now=at(15))
    assert record(driver, "A-1").state == "confirmed" and of_type(out, "dlt.decided")[0].data.revises == "rejected"


def test_a_lab_dlt_rejected_on_revision_reopens_only_when_the_grade_4_lasts(driver: Driver) -> None:
    driver.apply(neut("A-1", "B0", "0.8", -2, baseline=True))  # grade 3 at entry: the indication
    subject_in(driver, "A-1", "A", visit=False)
    [suspected] = of_type(driver.apply(neut("A-1", "N5", "0.3", 5)), "dlt.suspected")  # grade 4: worse by one
    assert suspected.data.criterion == "haematological"
    decide(driver, "A-1", "confirmed", ae_id=suspected.data.ae_id, now=at(6))
    out = decide(
        driver, "A-1", "rejected", expected="confirmed", ae_id=suspected.data.ae_id, reason="SRC: transient", now=at(7)
    )
    assert of_type(out, "dlt.suspected") == [], "the revision itself reopens nothing"
    assert not of_type(driver.apply(neut("A-1", "N12", "0.3", 12), now=at(12)), "dlt.suspected")
    [reopened] = of_type(driver.apply(neut("A-1", "N20", "0.3", 20), now=at(20)), "dlt.suspected")
    assert reopened.data.criterion == "haematological_grade4_prolonged", "a criterion the committee did not judge"


def test_a_lower_grade_follow_up_under_a_confirmed_dlt_changes_nothing(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    out = driver.apply(related_ae("A-1", DAY0 + timedelta(days=9), version=2, grade=2), now=at(14))
    assert [t for t in types(out) if t.startswith(("dlt.", "cohort."))] == [], "CTCAE grades an AE by its worst"
    assert (record(driver, "A-1").state, record(driver, "A-1").grade, cohort(driver).dlt_confirmed) == (
        "confirmed",
        3,
        1,
    )


def test_a_not_related_follow_up_under_a_confirmed_dlt_tells_the_officers(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    out = driver.apply(related_ae("A-1", DAY0 + timedelta(days=9), version=2, relatedness="not_related"), now=at(14))
    assert record(driver, "A-1").state == "confirmed", "the committee's decision stands until it revises it"
    assert of_type(out, "data_quality.flagged"), "the officers are told the causality under the DLT changed"


# --- two officers, and the trail an inspector reads ---------------------------------------------------------


def test_two_officers_a_stale_page_never_undoes_a_revision_and_a_double_revision_is_one(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", actor="olga", now=at(11))
    decide(driver, "A-1", "rejected", expected="confirmed", actor="otto", reason="SRC: CMV", now=at(12))
    with pytest.raises(DltAlreadyDecided, match='"expected_state": "rejected"'):
        decide(driver, "A-1", "confirmed", actor="olga", reason="I confirm (page from this morning)", now=at(13))
    with pytest.raises(DltAlreadyDecided):
        decide(driver, "A-1", "confirmed", expected="confirmed", actor="olga", now=at(13))
    rows = len(trail(driver.engine))
    again = decide(driver, "A-1", "rejected", expected="confirmed", actor="mona", reason="SRC: CMV (minutes)")
    assert again == [] and len(trail(driver.engine)) == rows, "the same revision twice is recorded once"
    kept = record(driver, "A-1")
    assert (kept.state, kept.decided_by, kept.decision_reason) == ("rejected", "otto", "SRC: CMV")


def test_the_audit_trail_reconstructs_who_decided_what_and_why_in_order(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", actor="olga", reason="CT: pneumonitis", now=at(11))
    decide(driver, "A-1", "rejected", expected="confirmed", actor="otto", reason="SRC: CMV on BAL", now=at(12))
    decide(driver, "A-1", "confirmed", expected="rejected", actor="olga", reason="SRC: CMV PCR negative", now=at(13))
    dlt = record(driver, "A-1").dlt_id
    entries = trail(driver.engine, f"dlt/{dlt}")
    story = [(e.action, e.actor, e.detail.get("previous_state"), e.detail.get("reason")) for e in entries]
    assert story[1:] == [
        ("dlt.confirmed", "olga", "suspected", "CT: pneumonitis"),
        ("dlt.revised", "otto", "confirmed", "SRC: CMV on BAL"),
        ("dlt.revised", "olga", "rejected", "SRC: CMV PCR negative"),
    ]
    assert story[0][0] == "dlt.suspected"
    assert [e.detail["revises"]["decided_by"] for e in entries[2:]] == ["olga", "otto"]
    assert [e.detail["revises"]["reason"] for e in entries[2:]] == ["CT: pneumonitis", "SRC: CMV on BAL"]
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    moves = [e for e in trail(driver.engine, f"cohort/{TRIAL}/A") if str(e.detail["source_id"]).startswith(dlt)]
    assert [m.detail["decision"] for m in moves] == ["expand", "evaluating", "expand"], "each arm move names its cause"
    count, problems = verify_chain(driver.engine, service="safety")
    assert count > 0 and problems == []


def test_revising_one_of_a_subjects_two_dlts_changes_no_arm_decision(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    driver.apply(related_ae("A-1", DAY0 + timedelta(days=10), ae_id="AE-2", term="Hypoxia"), now=at(11))
    decide(driver, "A-1", "confirmed", now=at(12))
    decide(driver, "A-1", "confirmed", ae_id="AE-2", now=at(12))
    out = decide(driver, "A-1", "rejected", expected="confirmed", ae_id="AE-2", reason="SRC: CMV", now=at(13))
    assert types(out) == ["dlt.decided"], "subjects are counted, not events: the arm is unchanged (no cohort mail)"
    assert outcome_of(driver, "A-1").dlt_confirmed == 1 and cohort(driver).decision == "expand"


# --- the API ------------------------------------------------------------------------------------------------

VIEWER = "viewer-token-0123456789abcdef"
OFFICER = "officer-token-0123456789abcdef"
NOW = datetime(2026, 3, 12, 9, tzinfo=UTC)


@pytest.fixture
def client(tmp_path: Path, clean_env: None) -> TestClient:
    settings = SafetySettings(
        var_dir=tmp_path,
        api_tokens={VIEWER: {"user": "vera", "role": "viewer"}, OFFICER: {"user": "olga", "role": "officer"}},
    )
    app = create_app(settings, clock=FakeClock(NOW), registry=CollectorRegistry())
    driver = Driver(app.state.engine, app.state.protocol)
    for subject in ("A-1", "A-2", "A-3"):
        subject_in(driver, subject, "A", start=date(2026, 3, 2))
    driver.apply(related_ae("A-1", date(2026, 3, 10)))
    return TestClient(app)


def test_a_viewer_cannot_revise_and_a_revision_needs_a_reason_and_a_known_state(client: TestClient) -> None:
    url = f"/v1/dlts/{dlt_id_for(TRIAL, 'A-1', 'AE-1')}"
    officer, viewer = {"authorization": f"Bearer {OFFICER}"}, {"authorization": f"Bearer {VIEWER}"}
    assert client.post(f"{url}/confirm", json={"reason": "CT"}, headers=officer).status_code == 200
    revise = {"reason": "SRC: CMV", "expected_state": "confirmed"}
    assert client.post(f"{url}/reject", json=revise, headers=viewer).status_code == 403
    for body in ({"expected_state": "confirmed"}, {"reason": "  ", "expected_state": "confirmed"}):
        assert client.post(f"{url}/reject", json=body, headers=officer).status_code == 422, body
    bad = client.post(f"{url}/reject", json={"reason": "x", "expected_state": "CONFIRMED!"}, headers=officer)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/v1/trials/{TRIAL}/dlts", headers=viewer).json()[0]["state"] == "confirmed"
    revised = client.post(f"{url}/reject", json=revise, headers=officer)
    assert revised.status_code == 200 and revised.json()["state"] == "rejected"
    subject = client.get(f"/v1/trials/{TRIAL}/subjects/A-1", headers=viewer).json()
    assert subject["evaluable"] is False, "no DLT and the window still open: not evaluable yet"


def test_a_revision_from_a_page_older_than_the_last_decision_is_a_conflict(client: TestClient) -> None:
    url = f"/v1/dlts/{dlt_id_for(TRIAL, 'A-1', 'AE-1')}"
    officer = {"authorization": f"Bearer {OFFICER}"}
    clock: FakeClock = client.app.state.clock  # type: ignore[attr-defined]
    seen = client.post(f"{url}/confirm", json={"reason": "CT"}, headers=officer).json()
    clock.advance(timedelta(days=1))
    client.post(f"{url}/reject", json={"reason": "SRC: CMV", "expected_state": "confirmed"}, headers=officer)
    clock.advance(timedelta(days=1))
    again = {"reason": "SRC: CMV PCR negative", "expected_state": "rejected"}
    assert client.post(f"{url}/confirm", json=again, headers=officer).json()["state"] == "confirmed"
    stale = {"reason": "slip", "expected_state": "confirmed", "expected_revision": seen["revision"]}
    refused = client.post(f"{url}/reject", json=stale, headers=officer)
    assert refused.status_code == 409 and refused.json()["state"] == "confirmed"
    assert f"since revision {seen['revision']}" in refused.json()["detail"]
    current = client.get(f"/v1/trials/{TRIAL}/dlts", headers=officer).json()[0]
    fresh = {**stale, "expected_revision": current["revision"], "reason": "SRC: final, not a DLT"}
    assert client.post(f"{url}/reject", json=fresh, headers=officer).json()["state"] == "rejected"
