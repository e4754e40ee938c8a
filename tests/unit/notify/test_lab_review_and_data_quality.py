"""Lab toxicity alerts are obligations: a review clock from receipt, escalation until acknowledged, reminders
and overdue pages until the review is recorded; floor grades read "at least". Data-quality findings reach the
site's data manager (and, for an implausible value, the safety officer), once, without a clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.notify.models import Alert, Obligation
from services.notify.obligations import LAB_REVIEW
from shared.events import (
    DataQualityData,
    DataQualityFlagged,
    LabToxicity,
    LabToxicityData,
    deterministic_id,
)
from shared.protocol import Contact, DataQualityAlerts, LabAlerts
from tests.unit.conftest import START
from tests.unit.notify.conftest import Notifier, act

SO = "safety.officer@sentinel.example"
MM = "medical.monitor@sentinel.example"
PI = "principal.investigator@sentinel.example"
DM = "data.manager@sentinel.example"
RECEIVED = START + timedelta(minutes=5)
TICK = timedelta(microseconds=1)


def to(sent: list[tuple[str, str]]) -> list[str]:
    return sorted(recipient for recipient, _ in sent)


def lab_signal(
    grade: int, result_id: str, *, floor: bool = False, received_at: datetime | None = RECEIVED
) -> LabToxicity:
    return LabToxicity(
        id=deterministic_id("test", result_id),
        source="/services/safety",
        subject="S-001",
        time=START - timedelta(days=2),  # collected two days before it reached us
        trialid="NCT07212335",
        data=LabToxicityData(
            site_id="SITE-1",
            subject_id="S-001",
            result_id=result_id,
            test="CREAT",
            term="Creatinine increased",
            grade=grade,
            baseline_grade=0,
            previous_grade=None,
            value="3.2",
            unit="mg/dL",
            reason=f"{'at least ' if floor else ''}grade {grade}: 3.2 mg/dL > 3.0 x baseline",
            collected_at=START - timedelta(days=2),
            source_event_id=f"src-{result_id}",
            floor=floor,
            received_at=received_at,
        ),
    )


def dq_signal(code: str, *, site: str = "SITE-1", record_id: str = "R-9", detail: str = "seen") -> DataQualityFlagged:
    return DataQualityFlagged(
        id=deterministic_id("test", code, site, record_id, detail),
        source="/services/safety",
        subject="S-001",
        time=START,
        trialid="NCT07212335",
        data=DataQualityData(
            site_id=site,
            subject_id="S-001",
            record_type="lab",
            record_id=record_id,
            code=code,
            detail=detail,
            source_event_id=f"src-{record_id}",
        ),
    )


async def test_floor_grade_pages_as_at_least(notifier: Notifier) -> None:
    notifier.apply(lab_signal(3, "R-1", floor=True))
    sent = await notifier.at(RECEIVED)
    assert to(sent) == [SO]
    assert "at least grade 3" in sent[0][1]
    alert = notifier.only(Alert)
    assert "at least grade 3" in alert.title
    body = notifier.deliveries()[0].body_text
    assert "Grade: at least 3" in body and "Review due" in body


async def test_lab_review_obligation_escalates_until_acknowledged(notifier: Notifier) -> None:
    notifier.clock.set(RECEIVED)
    notifier.apply(lab_signal(3, "R-1"))
    obligation = notifier.obligation()
    assert obligation.kind == LAB_REVIEW
    assert obligation.clock_started_at == RECEIVED  # receipt, not collection two days earlier
    assert obligation.due_at == RECEIVED + timedelta(hours=24)
    assert to(await notifier.at(RECEIVED)) == [SO]
    assert to(await notifier.at(RECEIVED + timedelta(minutes=30) - TICK)) == []
    assert to(await notifier.at(RECEIVED + timedelta(minutes=30))) == [MM], "unacknowledged: the next step"
    act(notifier, "acknowledge", actor="dr.a")
    assert to(await notifier.at(RECEIVED + timedelta(minutes=90))) == [], "acknowledged: paging stops"
    # The review clock runs on: reminders before the deadline, then overdue pages climbing the tiers.
    assert to(await notifier.at(RECEIVED + timedelta(hours=12))) == [SO]
    assert to(await notifier.at(RECEIVED + timedelta(hours=24) + TICK)) != []
    assert notifier.obligation().state == "overdue"


async def test_recording_the_review_stops_the_clock(notifier: Notifier) -> None:
    notifier.clock.set(RECEIVED)
    notifier.apply(lab_signal(3, "R-1"))
    await notifier.at(RECEIVED)
    act(notifier, "complete", actor="dr.a", reference="reviewed: hydrated, nephrology consulted")
    assert to(await notifier.at(RECEIVED + timedelta(hours=30))) == []
    assert notifier.only(Alert).state == "resolved"


async def test_worse_lab_after_the_review_opens_a_new_review(notifier: Notifier) -> None:
    notifier.clock.set(RECEIVED)
    notifier.apply(lab_signal(3, "R-1"))
    await notifier.at(RECEIVED)
    act(notifier, "complete", actor="dr.a", reference="reviewed")
    later = RECEIVED + timedelta(days=2)
    notifier.clock.set(later)
    notifier.apply(lab_signal(4, "R-2", received_at=later))
    open_ = [o for o in notifier.rows(Obligation) if o.state == "open"]
    assert len(open_) == 1 and open_[0].due_at == later + timedelta(hours=24)
    assert to(await notifier.at(later)) == [SO]


async def test_signal_from_an_older_producer_starts_the_clock_at_the_signal(notifier: Notifier) -> None:
    notifier.clock.set(RECEIVED)
    notifier.apply(lab_signal(3, "R-1", received_at=None))
    assert notifier.obligation().clock_started_at == START - timedelta(days=2)


async def test_review_hours_null_notifies_once(notifier: Notifier) -> None:
    notifier.protocol = notifier.protocol.model_copy(
        update={"lab_alerts": notifier.protocol.lab_alerts.model_copy(update={"review_hours": None})}
    )
    notifier.timers = notifier.new_runner()
    notifier.clock.set(RECEIVED)
    notifier.apply(lab_signal(3, "R-1"))
    assert notifier.rows(Obligation) == []
    assert to(await notifier.at(RECEIVED)) == [SO]
    assert to(await notifier.at(RECEIVED + timedelta(hours=30))) == []


async def test_data_quality_finding_reaches_the_data_manager_once(notifier: Notifier) -> None:
    notifier.clock.set(START)
    notifier.apply(dq_signal("unknown_unit", detail="Platelet count decreased: unit 'Zellen/ml' is not recognised"))
    sent = await notifier.at(START)
    assert to(sent) == [DM]
    assert "unknown unit" in sent[0][1].lower()
    alert = notifier.only(Alert)
    assert alert.kind == "data_quality" and alert.site_id == "SITE-1"
    assert notifier.rows(Obligation) == []
    assert "Zellen/ml" in notifier.deliveries()[0].body_text
    assert to(await notifier.at(START + timedelta(hours=5))) == [], "informational: no escalation"
    notifier.apply(dq_signal("unknown_unit", detail="Platelet count decreased: unit 'Zellen/ml' is not recognised"))
    assert to(await notifier.at(START + timedelta(hours=6))) == [], "the same finding again: history only"


async def test_implausible_value_also_reaches_the_safety_officer(notifier: Notifier) -> None:
    notifier.clock.set(START)
    notifier.apply(dq_signal("implausible_value", detail="Anemia: value 70 g/dL ...; likely g/L (as g/L: grade 3)"))
    assert to(await notifier.at(START)) == [DM, SO]


@pytest.mark.parametrize("code", ["unmapped_term", "inconsistent_seriousness", "something_new"])
async def test_every_code_is_handled(notifier: Notifier, code: str) -> None:
    notifier.clock.set(START)
    notifier.apply(dq_signal(code))
    assert to(await notifier.at(START)) == [DM]


async def test_site_contacts_hear_only_their_sites(notifier: Notifier) -> None:
    protocol = notifier.protocol
    contacts = [c for c in protocol.contacts if c.role != "data_manager"] + [
        Contact(name="DM 1", email="dm1@site1.example", role="data_manager", sites=["SITE-1"]),
        Contact(name="DM 2", email="dm2@site2.example", role="data_manager", sites=["SITE-2"]),
    ]
    notifier.protocol = protocol.model_copy(update={"contacts": contacts})
    notifier.clock.set(START)
    notifier.apply(dq_signal("unmapped_term", site="SITE-2"))
    assert to(await notifier.at(START)) == ["dm2@site2.example"]


def test_data_quality_roles_default_to_the_lab_alert_roles(notifier: Notifier) -> None:
    from services.notify.data_quality_alerts import plan_data_quality

    protocol = notifier.protocol.model_copy(
        update={"data_quality": DataQualityAlerts(), "lab_alerts": LabAlerts(notify_roles=["medical_monitor"])}
    )
    plan = plan_data_quality(dq_signal("unknown_unit"), protocol)
    assert [m.recipient for m in plan.messages] == [MM]
