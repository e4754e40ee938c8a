"""A lost response reaches the safety officer and the PI; a missed immunology sample reaches the site's data
manager (not the SRC); each once, without a clock."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from services.notify.models import Alert, Obligation
from shared.events import (
    AssessmentMissed,
    AssessmentMissedData,
    ResponseData,
    ResponseLost,
    deterministic_id,
)
from tests.unit.conftest import START
from tests.unit.notify.conftest import Notifier

SO = "safety.officer@sentinel.example"
MM = "medical.monitor@sentinel.example"
PI = "principal.investigator@sentinel.example"
DM = "data.manager@sentinel.example"


def lost() -> ResponseLost:
    return ResponseLost(
        id=deterministic_id("test", "lost"),
        source="/services/safety",
        subject="S-001",
        time=START,
        trialid="NCT07212335",
        data=ResponseData(
            site_id="SITE-1",
            subject_id="S-001",
            level="none",
            previous_level="complete",
            previous_since=START - timedelta(days=10),
            previous_confirmed_at=START - timedelta(days=8),
            lost_at=START,
            duration_days=Decimal("10.0"),
            reason="red cells transfusion at 2026-03-01T08:00:00+00:00",
        ),
    )


def sample_missed(category: str = "sample") -> AssessmentMissed:
    return AssessmentMissed(
        id=deterministic_id("test", "missed", category),
        source="/services/safety",
        subject="S-001",
        time=START,
        trialid="NCT07212335",
        data=AssessmentMissedData(
            site_id="SITE-1",
            subject_id="S-001",
            assessment="immunology sample: week 4" if category == "sample" else "week 4",
            due_from=START - timedelta(days=7),
            due_until=START,
            missing=["sample"] if category == "sample" else ["lab"],
            category=category,  # type: ignore[arg-type]
        ),
    )


async def test_a_lost_response_notifies_its_owners_once(notifier: Notifier) -> None:
    notifier.apply(lost())
    sent = await notifier.at(START)
    assert sorted(r for r, _ in sent) == [PI, SO]
    assert "Response lost" in sent[0][1] and "complete response (CR) -> no response" in sent[0][1]
    alert = notifier.only(Alert)
    assert (alert.kind, alert.subject_id, alert.state) == ("response_lost", "S-001", "open")
    assert notifier.rows(Obligation) == [], "informational: no clock"
    body = notifier.deliveries()[0].body_text
    assert "10.0 days" in body and "red cells transfusion" in body
    notifier.apply(lost())
    assert await notifier.at(START + timedelta(hours=1)) == [], "a re-delivery only adds history"
    assert [h.action for h in notifier.history()][-1] == "flagged_again"


async def test_a_missed_sample_goes_to_the_site_and_a_missed_visit_still_to_the_src(notifier: Notifier) -> None:
    notifier.apply(sample_missed())
    sent = await notifier.at(START)
    assert [r for r, _ in sent] == [DM]
    assert "Sample not collected: immunology sample: week 4" in sent[0][1]
    notifier.apply(sample_missed("visit"))
    visit = await notifier.at(START + timedelta(minutes=10))  # missed visits leave in the digest (5 min window)
    assert sorted(r for r, _ in visit) == [MM, SO], "visits keep their recipients (dlt.notify_roles)"
