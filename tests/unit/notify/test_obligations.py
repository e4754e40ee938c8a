"""DLT, stopping-rule and informational signals: which alerts and obligations they open, close or cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.notify.models import Alert, Obligation, Timer
from shared.events import (
    AssessmentMissed,
    AssessmentMissedData,
    CohortData,
    CohortDecision,
    DltData,
    DltDecided,
    DltDecisionData,
    DltSuspected,
    DltWithdrawn,
    ProtocolDeviation,
    ProtocolDeviationData,
    StoppingRuleFired,
)
from tests.unit.conftest import START, TRIAL
from tests.unit.notify.conftest import Notifier

SO = "safety.officer@sentinel.example"
MM = "medical.monitor@sentinel.example"
SUSPECTED_AT = START - timedelta(hours=2)


def dlt(kind: type[Any] = DltSuspected, signal_id: str = "sig-dlt-1", **changes: Any) -> Any:
    data = {
        "dlt_id": "DLT-1",
        "site_id": "SITE-1",
        "subject_id": "S-001",
        "arm": "A",
        "ae_id": "AE-1",
        "ae_version": 1,
        "term": "Infusion related reaction",
        "grade": 3,
        "relatedness": "probable",
        "criterion": "infusion_reaction_grade3",
        "window_start": START - timedelta(days=3),
        "window_end": START + timedelta(days=25),
        "reason": "grade 3 infusion reaction inside the window",
        "source_event_id": "evt-9",
        **changes,
    }
    return kind(
        id=signal_id, source="/services/safety", subject="S-001", time=SUSPECTED_AT, trialid=TRIAL, data=DltData(**data)
    )


def decided(decision: str = "confirmed", revises: str | None = None) -> DltDecided:
    return DltDecided(
        id=f"sig-decided-{decision}",
        source="/services/safety",
        subject="S-001",
        time=START + timedelta(hours=5),
        trialid=TRIAL,
        data=DltDecisionData(
            dlt_id="DLT-1",
            subject_id="S-001",
            arm="A",
            decision=decision,
            decided_by="dr.reviewer",
            reason="reviewed with the PI",
            decided_at=START + timedelta(hours=5),
            revises=revises,
        ),
    )


def cohort(kind: type[Any] = CohortDecision, signal_id: str = "sig-cohort", **changes: Any) -> Any:
    data = {
        "arm": "A",
        "enrolled": 3,
        "evaluable": 3,
        "dlt_confirmed": 2,
        "dlt_suspected": 0,
        "decision": "stop",
        "previous_decision": "expand",
        "next_arm": None,
        "reason": "2 DLTs in arm A",
        **changes,
    }
    return kind(
        id=signal_id, source="/services/safety", subject="A", time=START, trialid=TRIAL, data=CohortData(**data)
    )


def to(sent: list[tuple[str, str]]) -> list[str]:
    return sorted(r for r, _ in sent)


async def test_suspected_dlt_opens_a_review_obligation_from_the_suspicion_time(notifier: Notifier) -> None:
    notifier.apply(dlt())
    obligation = notifier.obligation()
    assert (obligation.kind, obligation.state, obligation.clock_basis) == ("dlt_review", "open", "suspicion")
    assert obligation.due_at == SUSPECTED_AT + timedelta(hours=72)
    sent = await notifier.at(START)
    assert to(sent) == [MM, SO], "dlt.notify_roles (plus step 1, the same people)"
    assert "Suspected DLT" in sent[0][1]
    reminders = sorted(t.due_at for t in notifier.pending() if t.kind == "reminder")
    assert reminders == [obligation.due_at - timedelta(hours=h) for h in (12, 4, 1)]


async def test_withdrawn_dlt_cancels_the_review_with_its_reason_and_says_so(notifier: Notifier) -> None:
    notifier.apply(dlt())
    await notifier.at(START)
    notifier.apply(dlt(DltWithdrawn, signal_id="sig-w", relatedness="unlikely", reason="relatedness now unlikely"))
    obligation = notifier.obligation()
    assert obligation.state == "cancelled"
    assert obligation.cancel_reason == "DLT withdrawn: relatedness now unlikely"
    assert notifier.pending() == [], "no reminders, no overdue, no escalation"
    sent = await notifier.at(START + timedelta(minutes=1))
    assert to(sent) == [MM, SO] and all("withdrawn" in s for _, s in sent)
    assert notifier.only(Alert).state == "resolved"
    assert "obligation_cancelled" in [h.action for h in notifier.history()]
    assert to(await notifier.at(START + timedelta(days=5))) == []


async def test_decision_completes_the_review_with_the_decider_as_actor(notifier: Notifier) -> None:
    notifier.apply(dlt())
    notifier.apply(decided("rejected"))
    obligation = notifier.obligation()
    assert (obligation.state, obligation.completed_by) == ("completed", "dr.reviewer")
    assert obligation.completed_at == START + timedelta(hours=5)
    assert obligation.reference and obligation.reference.startswith("DLT rejected")
    filed = [h for h in notifier.history() if h.action == "report_filed"]
    assert [h.actor for h in filed] == ["dr.reviewer"]
    assert {t.state for t in notifier.rows(Timer)} == {"cancelled"}


async def test_decision_for_an_unknown_dlt_is_still_recorded(notifier: Notifier) -> None:
    notifier.apply(decided("confirmed"))
    alert = notifier.only(Alert)
    assert alert.kind == "dlt"
    assert [h.action for h in notifier.history()] == ["dlt_confirmed"]


async def test_a_revised_decision_is_recorded_as_a_revision_and_reopens_nothing(notifier: Notifier) -> None:
    notifier.apply(dlt())
    assert to(await notifier.at(START)) == [MM, SO]
    notifier.apply(decided("confirmed"))
    notifier.apply(decided("rejected", revises="confirmed"))
    history = notifier.history()
    assert [h.action for h in history if h.action.startswith("dlt_")] == ["dlt_confirmed", "dlt_revised"]
    revised = next(h for h in history if h.action == "dlt_revised")
    assert revised.actor == "dr.reviewer"
    assert revised.detail == (
        "DLT rejected by dr.reviewer (revising the earlier decision: confirmed): reviewed with the PI"
    )
    assert notifier.obligation().state == "completed", "the review was done; revising it opens no new clock"
    sent = await notifier.at(START + timedelta(hours=6))
    assert to(sent) == [MM, SO], "those paged for the suspicion are told, once, that its decision was reversed"
    assert all("DLT decision revised: confirmed -> rejected" in subject for _, subject in sent)
    assert to(await notifier.at(START + timedelta(hours=30))) == [], "a notice, no clock: nothing follows"


async def test_dlt_follow_up_repages_only_when_worse(notifier: Notifier) -> None:
    notifier.apply(dlt())
    await notifier.at(START)
    notifier.apply(dlt(signal_id="sig-dlt-2", ae_version=2))
    assert await notifier.at(START + timedelta(minutes=1)) == []
    notifier.apply(dlt(signal_id="sig-dlt-3", ae_version=3, grade=4))
    assert to(await notifier.at(START + timedelta(minutes=2))) == [MM, SO]
    assert len(notifier.rows(Obligation)) == 1


async def test_stopping_rule_opens_a_review_due_in_dlt_review_hours(notifier: Notifier) -> None:
    notifier.apply(cohort(StoppingRuleFired, signal_id="sig-stop"))
    obligation = notifier.obligation()
    assert obligation.kind == "stopping_rule_review"
    assert obligation.due_at == START + timedelta(hours=72)
    alert = notifier.only(Alert)
    assert (alert.kind, alert.subject_id) == ("stopping_rule", "")
    assert to(await notifier.at(START)) == [MM, SO]
    notifier.apply(cohort(StoppingRuleFired, signal_id="sig-stop"))
    assert len(notifier.rows(Obligation)) == 1, "a replay adds nothing"


async def test_informational_signals_notify_once_without_clock_or_escalation(notifier: Notifier) -> None:
    notifier.apply(cohort())
    notifier.apply(
        AssessmentMissed(
            id="sig-miss",
            source="/services/safety",
            subject="S-001",
            time=START,
            trialid=TRIAL,
            data=AssessmentMissedData(
                site_id="SITE-1",
                subject_id="S-001",
                assessment="week 1",
                due_from=START - timedelta(days=3),
                due_until=START - timedelta(days=1),
                missing=["lab"],
            ),
        )
    )
    notifier.apply(
        ProtocolDeviation(
            id="sig-dev",
            source="/services/safety",
            subject="S-001",
            time=START,
            trialid=TRIAL,
            data=ProtocolDeviationData(
                site_id="SITE-1", subject_id="S-001", arm="A", kind="dose_timing", detail="infusion 2 days late"
            ),
        )
    )
    assert notifier.rows(Obligation) == []
    assert notifier.pending() == []
    sent = await notifier.at(START)
    assert len(sent) == 2, "the cohort decision at once, to dlt.notify_roles (two people)"
    assert {s.split("]")[1].split()[0] for _, s in sent} == {"Cohort"}
    digests = await notifier.at(START + timedelta(minutes=5))
    assert sorted(to for to, _ in digests) == ["medical.monitor@sentinel.example", "safety.officer@sentinel.example"]
    assert all(subject.startswith("Digest: 2 notices") for _, subject in digests), "missed + deviation, one mail"
    body = str(notifier.channel.sent[-1].get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    assert "Missed assessment" in body and "Protocol deviation" in body
    assert await notifier.at(START + timedelta(days=2)) == []
    assert {a.kind for a in notifier.rows(Alert)} == {"cohort_decision", "assessment_missed", "protocol_deviation"}
