"""Lab toxicity signals in notify: one alert per subject and term with its review clock, re-paged when worse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from services.notify import models
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
