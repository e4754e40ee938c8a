"""A lab finding that no longer stands (`lab.toxicity_withdrawn`): its review is cancelled and nothing escalates, who
was paged hears it once; a lower grade that stands keeps the review without a page; order is read from `sequence`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from services.notify import models
from services.notify.models import Alert, Delivery, Obligation, Timer
from services.notify.signals import apply_signal
from services.notify.store import history_for
from shared.db import create_tables
from shared.events import (
    LabToxicity,
    LabToxicityData,
    LabToxicityWithdrawalData,
    LabToxicityWithdrawn,
    StandingResult,
    deterministic_id,
)
from shared.protocol import Protocol

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TERM = "Neutrophil count decreased"


def toxicity(grade: int, result_id: str, sequence: int) -> LabToxicity:
    return LabToxicity(
        id=deterministic_id("test", result_id, str(sequence)),
        source="/services/safety",
        subject="S-001",
        time=NOW,
        trialid="NCT07212335",
        data=LabToxicityData(
            site_id="SITE-1",
            subject_id="S-001",
            result_id=result_id,
            test="NEUT",
            term=TERM,
            grade=grade,
            baseline_grade=None,
            previous_grade=None,
            value="0.3",
            unit="10^9/L",
            reason=f"grade {grade}",
            collected_at=NOW - timedelta(hours=2),
            source_event_id=f"src-{result_id}",
            received_at=NOW,
            sequence=sequence,
        ),
    )


def withdrawal(
    sequence: int,
    *,
    withdrawn: int = 4,
    standing: int | None = None,
    why: str = "result R-1 marked entered in error",
    withdrawn_result_id: str | None = None,
    standing_value: str | None = None,
    standing_result_id: str = "R-0",
    standing_floor: bool = False,
) -> LabToxicityWithdrawn:
    """`standing_value`: the value of the result that stands (`standing_result_id`), drawn an hour before the
    finding's."""
    standing_result = None
    if standing_value is not None:
        standing_result = StandingResult(
            test="NEUT",
            value=standing_value,
            unit="10^9/L",
            collected_at=NOW - timedelta(hours=3),
            reason=f"grade {standing}: {standing_value} 10^9/L",
            floor=standing_floor,
        )
    return LabToxicityWithdrawn(
        id=deterministic_id("test-withdrawn", str(sequence)),
        source="/services/safety",
        subject="S-001",
        time=NOW,
        trialid="NCT07212335",
        data=LabToxicityWithdrawalData(
            site_id="SITE-1",
            subject_id="S-001",
            term=TERM,
            withdrawn_grade=withdrawn,
            standing_grade=standing,
            standing_result_id=standing_result_id if standing is not None else None,
            why=why,
            source_event_id=f"status-{sequence}",
            received_at=NOW,
            sequence=sequence,
            withdrawn_result_id=withdrawn_result_id,
            standing_result=standing_result,
        ),
    )


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_tables(engine, models.TABLES)
    return engine


def apply(db: Engine, protocol: Protocol, signal: Any, at: datetime) -> None:
    with Session(db) as session, session.begin():
        apply_signal(session, signal, at, protocol=protocol)


def rows(db: Engine, model: Any) -> list[Any]:
    with Session(db) as session:
        return list(session.execute(select(model)).scalars().all())


def actions(db: Engine) -> list[str]:
    with Session(db) as session:
        [alert] = session.execute(select(Alert)).scalars().all()
        return [h.action for h in history_for(session, alert_id=alert.id)]


def hand_over_pages(db: Engine) -> None:
    """The mail server took the pages queued so far."""
    with Session(db) as session, session.begin():
        for delivery in session.execute(select(Delivery)).scalars():
            delivery.status = "sent"


def test_a_paged_finding_taken_back_cancels_its_review_stops_escalation_and_tells_who_was_paged(
    db: Engine, protocol: Protocol
) -> None:
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    hand_over_pages(db)
    apply(db, protocol, withdrawal(1), NOW + timedelta(minutes=20))
    [alert] = rows(db, Alert)
    assert alert.state == "resolved"
    assert alert.title.startswith(f"{TERM}: grade 4 no longer stands")
    [review] = rows(db, Obligation)
    assert review.state == "cancelled" and "entered in error" in (review.cancel_reason or "")
    pending = [t.kind for t in rows(db, Timer) if t.state == "pending"]
    assert pending == [], "no escalation, reminder, overdue page or failover left to fire"
    page, notice = sorted(rows(db, Delivery), key=lambda d: d.created_at)
    assert page.recipient == notice.recipient == "safety.officer@sentinel.example"
    assert "no review needed" in notice.subject and "entered in error" in notice.body_text
    assert actions(db)[0] == "opened" and actions(db)[-1] == "lab_finding_withdrawn"


def test_a_page_not_yet_handed_over_is_not_sent_and_nobody_is_told(db: Engine, protocol: Protocol) -> None:
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    apply(db, protocol, withdrawal(1), NOW + timedelta(seconds=30))
    [page] = rows(db, Delivery)
    assert page.status == "cancelled"
    [review] = rows(db, Obligation)
    assert review.state == "cancelled"


def test_a_lower_grade_that_stands_keeps_the_review_and_pages_nobody(db: Engine, protocol: Protocol) -> None:
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    hand_over_pages(db)
    apply(db, protocol, withdrawal(1, standing=3, why="result R-1 corrected by the site: 0.3 -> 0.8"), NOW)
    [alert] = rows(db, Alert)
    assert alert.state == "open"
    assert alert.title.startswith(f"{TERM} grade 3 (grade 4 no longer stands)")
    assert alert.details["standing_grade"] == 3 and "0.3 -> 0.8" in alert.details["no_longer_stands"]
    [review] = rows(db, Obligation)
    assert review.state == "open"
    assert len(rows(db, Delivery)) == 1, "a better result pages nobody"
    assert actions(db)[-1] == "lab_finding_revised"


def test_a_withdrawal_raised_before_the_finding_shown_is_only_history(db: Engine, protocol: Protocol) -> None:
    """Safety withdrew grade 4 (number 1), then a new grade 4 came (2); the withdrawal reaches notify last."""
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    apply(db, protocol, toxicity(4, "R-2", 2), NOW + timedelta(minutes=1))
    apply(db, protocol, withdrawal(1), NOW + timedelta(minutes=2))
    [alert] = rows(db, Alert)
    assert alert.state == "open" and "no longer stands" not in alert.title
    assert [o.state for o in rows(db, Obligation)] == ["open"]
    assert actions(db)[-1] == "flagged_again"


def test_a_worse_result_after_a_withdrawal_pages_again_with_a_new_review(db: Engine, protocol: Protocol) -> None:
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    hand_over_pages(db)
    apply(db, protocol, withdrawal(1), NOW + timedelta(minutes=5))
    apply(db, protocol, toxicity(3, "R-2", 2), NOW + timedelta(days=1))
    [alert] = rows(db, Alert)
    assert alert.state == "open" and alert.title.startswith(f"{TERM} grade 3")
    assert sorted(o.state for o in rows(db, Obligation)) == ["cancelled", "open"]
    assert actions(db)[-1] == "worsened"


def test_the_finding_raised_before_its_withdrawal_but_delivered_after_it_is_history(
    db: Engine, protocol: Protocol
) -> None:
    """Grade 3 (1) shown; a grade 4 (2) is raised, then taken back (the withdrawal of 2, grade 3 standing); the
    withdrawal reaches notify before the grade 4: the grade 4 then pages nobody."""
    apply(db, protocol, toxicity(3, "R-0", 1), NOW)
    apply(db, protocol, withdrawal(2, standing=3), NOW + timedelta(minutes=1))
    apply(db, protocol, toxicity(4, "R-1", 2), NOW + timedelta(minutes=2))
    [alert] = rows(db, Alert)
    assert alert.title.startswith(f"{TERM} grade 3 (grade 4 no longer stands)")
    assert len(rows(db, Delivery)) == 1
    assert actions(db)[-1] == "flagged_again"


def test_a_withdrawal_that_overtook_its_finding_keeps_the_finding_from_paging(db: Engine, protocol: Protocol) -> None:
    """The withdrawal of grade 4 (number 1, nothing standing) reaches notify before the grade 4 itself (the routine
    lane's turn while the finding waited on the signals topic): a resolved alert keeps it, and the grade 4 is then
    history, with no page and no review. A worse result after it pages."""
    apply(db, protocol, withdrawal(1), NOW)
    [alert] = rows(db, Alert)
    assert alert.state == "resolved" and rows(db, Obligation) == [] and rows(db, Delivery) == []
    apply(db, protocol, toxicity(4, "R-1", 1), NOW + timedelta(seconds=5))
    assert rows(db, Delivery) == [] and rows(db, Obligation) == []
    assert actions(db) == ["lab_finding_withdrawn", "flagged_again"]
    apply(db, protocol, toxicity(4, "R-2", 2), NOW + timedelta(days=1))
    [alert] = rows(db, Alert)
    assert alert.state == "open" and len(rows(db, Delivery)) == 1
    assert [o.state for o in rows(db, Obligation)] == ["open"]


def test_a_lower_grade_standing_before_any_finding_arrived_leaves_the_findings_to_page(
    db: Engine, protocol: Protocol
) -> None:
    apply(db, protocol, withdrawal(2, standing=3), NOW)
    assert rows(db, Alert) == []


def test_a_lower_grade_standing_before_any_finding_arrived_opens_as_the_finding_and_the_finding_is_history(
    db: Engine, protocol: Protocol
) -> None:
    """Grade 4 (number 2) was taken back and grade 3 (R-0, 0.8) stands; the withdrawal reaches notify before any
    finding (the signals topic backed up). What stands opens the alert as its finding would: grade 3, 0.8, paged,
    its review owed. The grade 4 then comes: history, no second page, the alert still grade 3 (before, it opened
    the alert at a grade 4 the site had taken back)."""
    apply(db, protocol, withdrawal(2, standing=3, standing_value="0.8"), NOW)
    [alert] = rows(db, Alert)
    assert alert.state == "open" and alert.title.startswith(f"{TERM} grade 3")
    assert (alert.details["result_id"], alert.details["value"], alert.details["grade"]) == ("R-0", "0.8", 3)
    assert [o.state for o in rows(db, Obligation)] == ["open"] and len(rows(db, Delivery)) == 1
    apply(db, protocol, toxicity(4, "R-1", 2), NOW + timedelta(seconds=5))
    [alert] = rows(db, Alert)
    assert alert.details["value"] == "0.8" and alert.details["grade"] == 3
    assert len(rows(db, Delivery)) == 1 and actions(db)[-1] == "flagged_again"
    apply(db, protocol, toxicity(4, "R-2", 3), NOW + timedelta(days=1))
    assert len(rows(db, Delivery)) == 2, "a grade 4 raised after the withdrawal is news"


def test_the_paged_result_taken_back_while_its_grade_stands_shows_the_result_that_stands(
    db: Engine, protocol: Protocol
) -> None:
    """R-1 (grade 4) paged; the site takes it back and R-0, also grade 4, stands: the alert shows R-0 and its value,
    keeps its title, its review and its escalation; nobody is paged or told the finding is gone."""
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    hand_over_pages(db)
    [before] = rows(db, Alert)
    timers = sorted(t.kind for t in rows(db, Timer) if t.state == "pending")
    apply(db, protocol, withdrawal(1, standing=4, withdrawn_result_id="R-1", standing_value="0.4"), NOW)
    [alert] = rows(db, Alert)
    assert alert.state == "open" and alert.title == before.title and "no longer stands" not in alert.title
    details = alert.details
    assert (details["result_id"], details["value"], details["grade"]) == ("R-0", "0.4", 4)
    assert datetime.fromisoformat(details["collected_at"]) == NOW - timedelta(hours=3)
    assert "no_longer_stands" not in details, "grade 4 still stands"
    assert [o.state for o in rows(db, Obligation)] == ["open"]
    assert sorted(t.kind for t in rows(db, Timer) if t.state == "pending") == timers, "the review still escalates"
    assert len(rows(db, Delivery)) == 1, "nobody paged again, nobody told the finding is gone"
    assert actions(db)[-1] == "lab_finding_revised"


def test_a_result_taken_back_that_the_alert_does_not_show_leaves_it_as_it_is(db: Engine, protocol: Protocol) -> None:
    """R-1 paged grade 4; R-5 (grade 4, not news) is taken back while R-0 stands: the alert keeps R-1, which stands."""
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    apply(db, protocol, withdrawal(1, standing=4, withdrawn_result_id="R-5", standing_value="0.4"), NOW)
    [alert] = rows(db, Alert)
    assert (alert.details["result_id"], alert.details["value"]) == ("R-1", "0.3")
    assert "withdrawn_through" not in alert.details
    assert [o.state for o in rows(db, Obligation)] == ["open"]
    assert actions(db)[-1] == "flagged_again"


def test_a_lower_grade_that_stands_is_shown_with_its_own_value(db: Engine, protocol: Protocol) -> None:
    """Never the value taken back (0.3) under the grade that stands."""
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    apply(db, protocol, withdrawal(1, standing=3, standing_value="0.8"), NOW)
    [alert] = rows(db, Alert)
    assert (alert.details["result_id"], alert.details["value"], alert.details["grade"]) == ("R-0", "0.8", 3)
    assert alert.details["reason"] == "grade 3: 0.8 10^9/L"


def test_the_result_shown_corrected_within_its_grade_is_revised_in_place(db: Engine, protocol: Protocol) -> None:
    """R-1 (0.3, grade 4) paged; the site corrects it to 0.4, still grade 4 (safety names R-1 as both withdrawn and
    standing). The alert shows 0.4 and R-1's corrected time, keeps its title, review and escalation; nobody is paged
    or told; the history says the result was revised, not that the finding was withdrawn."""
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    hand_over_pages(db)
    [before] = rows(db, Alert)
    timers = sorted(t.kind for t in rows(db, Timer) if t.state == "pending")
    why = "result R-1 corrected by the site: 0.3 10^9/L -> 0.4 10^9/L"
    revision = withdrawal(
        1, standing=4, why=why, withdrawn_result_id="R-1", standing_value="0.4", standing_result_id="R-1"
    )
    apply(db, protocol, revision, NOW + timedelta(minutes=30))
    [alert] = rows(db, Alert)
    assert alert.state == "open" and alert.title == before.title
    assert (alert.details["result_id"], alert.details["value"], alert.details["grade"]) == ("R-1", "0.4", 4)
    assert datetime.fromisoformat(alert.details["collected_at"]) == NOW - timedelta(hours=3)
    assert "no_longer_stands" not in alert.details
    assert [o.state for o in rows(db, Obligation)] == ["open"]
    assert sorted(t.kind for t in rows(db, Timer) if t.state == "pending") == timers, "the review still escalates"
    assert len(rows(db, Delivery)) == 1, "nobody paged again, nobody told"
    with Session(db) as session:
        last = history_for(session, alert_id=alert.id)[-1]
    assert last.action == "lab_finding_revised"
    assert last.detail == (
        f"{TERM} grade 4: {why}; result R-1 revised, still grade 4 (0.4 10^9/L), now shown; its review stays"
    )


def test_a_revision_after_its_review_was_completed_tells_who_was_paged_once(db: Engine, protocol: Protocol) -> None:
    """R-1 (0.3, grade 4) paged and its review was completed; the site then corrects it to 0.4 (grade 4). The review
    assessed 0.3: whoever was paged hears once that what it assessed changed; no review is opened again."""
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    hand_over_pages(db)
    with Session(db) as session, session.begin():
        for obligation in session.execute(select(Obligation)).scalars():
            obligation.state = "completed"
    why = "result R-1 corrected by the site: 0.3 10^9/L -> 0.4 10^9/L"
    revision = withdrawal(
        1, standing=4, why=why, withdrawn_result_id="R-1", standing_value="0.4", standing_result_id="R-1"
    )
    apply(db, protocol, revision, NOW + timedelta(hours=30))
    assert [o.state for o in rows(db, Obligation)] == ["completed"]
    notices = [d for d in rows(db, Delivery) if "revised after its review" in d.subject]
    assert len(notices) == 1 and len(rows(db, Delivery)) == 2
    apply(db, protocol, revision, NOW + timedelta(hours=31))
    assert len(rows(db, Delivery)) == 2, "the same revision delivered again tells nobody again"


def test_a_revision_says_at_least_in_its_title_as_the_result_that_stands_does(db: Engine, protocol: Protocol) -> None:
    """R-1 0.3 (grade 4) paged; the lab re-sends it as '<0.5' (at least grade 4: the exact count is lost): the title
    says "at least grade 4"; re-sent exact again, it says "grade 4"."""
    apply(db, protocol, toxicity(4, "R-1", 1), NOW)
    censored = withdrawal(1, standing=4, withdrawn_result_id="R-1", standing_value="<0.5", standing_result_id="R-1",
                          standing_floor=True)  # fmt: skip
    apply(db, protocol, censored, NOW + timedelta(minutes=30))
    [alert] = rows(db, Alert)
    assert alert.title.startswith(f"{TERM} at least grade 4 (")
    exact = withdrawal(2, standing=4, withdrawn_result_id="R-1", standing_value="0.3", standing_result_id="R-1")
    apply(db, protocol, exact, NOW + timedelta(hours=1))
    [alert] = rows(db, Alert)
    assert alert.title.startswith(f"{TERM} grade 4 (") and len(rows(db, Delivery)) == 1
