"""Lab toxicity signals in notify: one alert per subject and term with its review clock, re-paged when worse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from services.notify import models, urgency
from services.notify.models import Alert, Delivery, Obligation
from services.notify.signals import apply_signal
from services.notify.store import history_for
from shared.db import create_tables
from shared.events import LabToxicity, LabToxicityData, deterministic_id
from shared.protocol import Protocol

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def signal(grade: int, result_id: str) -> LabToxicity:
    return LabToxicity(
        id=deterministic_id("test", result_id),
        source="/services/safety",
        subject="S-001",
        time=NOW,
        trialid="NCT07212335",
        data=LabToxicityData(
            site_id="SITE-1",
            subject_id="S-001",
            result_id=result_id,
            test="PLAT",
            term="Platelet count decreased",
            grade=grade,
            baseline_grade=2,
            previous_grade=None if grade == 3 else 3,
            value="20",
            unit="10^9/L",
            reason="grade 4: 20 < 25",
            collected_at=NOW - timedelta(hours=2),
            source_event_id=f"src-{result_id}",
        ),
    )


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_tables(engine, models.TABLES)
    return engine


def history(db: Engine) -> list[Any]:
    with Session(db) as session:
        [alert] = session.execute(select(Alert)).scalars().all()
        return history_for(session, alert_id=alert.id)


def all_rows(db: Engine, model: Any) -> list[Any]:
    with Session(db) as session:
        return list(session.execute(select(model)).scalars().all())


def test_lab_toxicity_alerts_the_safety_officer_with_a_review_clock(db: Engine, protocol: Protocol) -> None:
    with Session(db) as session, session.begin():
        apply_signal(session, signal(3, "R-1"), NOW, protocol=protocol)
    [alert] = all_rows(db, Alert)
    assert alert.kind == "lab_toxicity"
    assert alert.title.startswith("Platelet count decreased grade 3")
    [obligation] = all_rows(db, Obligation)
    assert (obligation.kind, obligation.clock_basis) == ("lab_review", "signal")  # no received_at in this signal
    [delivery] = all_rows(db, Delivery)
    assert delivery.recipient == "safety.officer@sentinel.example"
    assert "Baseline: grade 2" in delivery.body_text and "Subject: S-001" in delivery.body_text


def test_worse_grade_threads_into_the_alert_reopens_and_pages_again(db: Engine, protocol: Protocol) -> None:
    with Session(db) as session, session.begin():
        apply_signal(session, signal(3, "R-1"), NOW, protocol=protocol)
    with Session(db) as session, session.begin():
        alert = session.execute(select(Alert)).scalar_one()
        alert.state, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", "dr.a", NOW
    with Session(db) as session, session.begin():
        apply_signal(session, signal(4, "R-2"), NOW + timedelta(days=1), protocol=protocol)
    [alert] = all_rows(db, Alert)
    assert (alert.state, alert.acknowledged_by) == ("open", None)
    assert "grade 4" in alert.title
    assert len(all_rows(db, Delivery)) == 2
    assert [h.action for h in history(db)] == ["opened", "worsened"]


def test_a_worse_result_delivered_before_the_one_safety_raised_first_keeps_the_worse_one_shown(
    db: Engine, protocol: Protocol
) -> None:
    """A grade 4 count entered on its own takes the urgent lane; the grade 3 a backfill brought earlier (safety
    raised it first: the grade 4's previous grade is 3) can reach notify after it. It is history, not news: the
    alert keeps the grade 4, nobody is paged again, and no second review opens."""
    with Session(db) as session, session.begin():
        apply_signal(session, signal(4, "R-2"), NOW, protocol=protocol)
    with Session(db) as session, session.begin():
        apply_signal(session, signal(3, "R-1"), NOW + timedelta(seconds=5), protocol=protocol)
    [alert] = all_rows(db, Alert)
    assert "grade 4" in alert.title and alert.details["result_id"] == "R-2"
    assert len(all_rows(db, Delivery)) == 1
    assert len(all_rows(db, Obligation)) == 1
    [opened, late] = history(db)
    assert (opened.action, late.action) == ("opened", "flagged_again")
    assert "grade 3" in late.detail and "R-1" in late.detail and "raised before" in late.detail


@pytest.mark.parametrize("grades", [(3, 4), (4, 3)])
def test_both_orders_of_a_lab_thread_end_showing_the_worse_finding(
    db: Engine, protocol: Protocol, grades: tuple[int, int]
) -> None:
    """In order, the grade 4 worsens the grade 3's alert; the other way round it is shown from the start."""
    for n, grade in enumerate(grades):
        with Session(db) as session, session.begin():
            apply_signal(session, signal(grade, f"R-{grade}"), NOW + timedelta(seconds=5 * n), protocol=protocol)
    [alert] = all_rows(db, Alert)
    assert "grade 4" in alert.title and alert.details["result_id"] == "R-4"


def test_a_result_entered_on_its_own_pages_ahead_of_a_backfills_lab_pages(db: Engine, protocol: Protocol) -> None:
    """A backfill's lab alerts page at PAGE; a grade 4 a site has just entered (its signal came on the signals topic,
    not the routine lane) pages as a LIVE_FINDING, above them (and below an SAE), so it is not mailed after hundreds
    of them. Later escalations of it are PAGEs again, as any lab review's."""
    backfilled = signal(3, "R-1").model_copy(update={"subject": "S-002"})
    backfilled = backfilled.model_copy(update={"data": backfilled.data.model_copy(update={"subject_id": "S-002"})})
    with Session(db) as session, session.begin():
        apply_signal(session, backfilled, NOW, protocol=protocol)
        apply_signal(session, signal(4, "R-2"), NOW, protocol=protocol, live=True)
    alerts = {alert.id: alert.subject_id for alert in all_rows(db, Alert)}
    paged = {alerts[delivery.alert_id]: delivery.urgency for delivery in all_rows(db, Delivery)}
    assert paged == {"S-002": urgency.PAGE, "S-001": urgency.LIVE_FINDING}
