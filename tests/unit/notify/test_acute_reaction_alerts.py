"""Acute-reaction signals in notify: one alert per AE to the protocol's roles, with a review clock from receipt,
re-paged when the grade gets worse; `review_hours: null` notifies once with no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from services.notify import models
from services.notify.models import Alert, Delivery, Obligation
from services.notify.signals import apply_signal
from shared.db import create_tables
from shared.events import AcuteReactionData, AcuteReactionDetected, deterministic_id
from shared.protocol import Protocol

NOW = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
INFUSED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def signal(grade: int, previous: int | None = None) -> AcuteReactionDetected:
    return AcuteReactionDetected(
        id=deterministic_id("test", "acute", str(grade)),
        source="/services/safety",
        subject="A-1",
        time=INFUSED + timedelta(hours=5),
        trialid="NCT07212335",
        data=AcuteReactionData(
            site_id="SITE-1",
            subject_id="A-1",
            ae_id="AE-1",
            ae_version=grade - 1,
            term="Infusion related reaction",
            grade=grade,
            previous_grade=previous,
            onset="2026-03-02",
            onset_at=INFUSED + timedelta(hours=5),
            onset_precision="time",
            dose_id="A-1-D1",
            dose_number=1,
            infusion_at=INFUSED,
            hours_after_infusion=Decimal("5.0"),
            dlt_grade=grade >= 3,
            reason="onset 5.0 h after the start of infusion 1 (window 24 h)",
            received_at=NOW - timedelta(minutes=30),
            source_event_id=f"src-{grade}",
        ),
    )


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_tables(engine, models.TABLES)
    return engine


def rows(db: Engine, model: Any) -> list[Any]:
    with Session(db) as session:
        return list(session.execute(select(model)).scalars().all())


def test_an_acute_reaction_pages_its_owners_with_a_review_clock_from_receipt(db: Engine, protocol: Protocol) -> None:
    with Session(db) as session, session.begin():
        apply_signal(session, signal(2), NOW, protocol=protocol)
    [alert] = rows(db, Alert)
    assert alert.kind == "acute_reaction"
    assert alert.title.startswith("Acute reaction: Infusion related reaction grade 2 after infusion 1")
    [obligation] = rows(db, Obligation)
    assert obligation.kind == "acute_reaction_review"
    assert obligation.due_at.replace(tzinfo=UTC) == NOW - timedelta(minutes=30) + timedelta(hours=24)
    recipients = {d.recipient for d in rows(db, Delivery)}
    assert recipients == {"safety.officer@sentinel.example", "medical.monitor@sentinel.example"}
    body = rows(db, Delivery)[0].body_text
    assert "Time after infusion: 5.0 h" in body and "Review due" in body


def test_a_worse_grade_threads_into_the_alert_and_pages_again(db: Engine, protocol: Protocol) -> None:
    with Session(db) as session, session.begin():
        apply_signal(session, signal(2), NOW, protocol=protocol)
    with Session(db) as session, session.begin():
        alert = session.execute(select(Alert)).scalar_one()
        alert.state, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", "dr.a", NOW
    with Session(db) as session, session.begin():
        apply_signal(session, signal(3, previous=2), NOW + timedelta(hours=2), protocol=protocol)
    [alert] = rows(db, Alert)
    assert (alert.state, alert.acknowledged_by) == ("open", None)
    assert "grade 3, DLT grade" in alert.title
    assert any("DLT" in d.body_text and "(was 2)" in d.body_text for d in rows(db, Delivery))


def test_without_a_review_clock_it_notifies_once(db: Engine, protocol: Protocol) -> None:
    assert protocol.acute_reactions is not None
    quiet = protocol.model_copy(
        update={"acute_reactions": protocol.acute_reactions.model_copy(update={"review_hours": None})}
    )
    with Session(db) as session, session.begin():
        apply_signal(session, signal(2), NOW, protocol=quiet)
    assert rows(db, Obligation) == []
    assert len(rows(db, Delivery)) == 2  # the two roles, no escalation step added


def test_a_vitals_finding_reads_as_one_not_as_a_lab(db: Engine, protocol: Protocol) -> None:
    from shared.events import LabToxicity, LabToxicityData

    fever = LabToxicity(
        id="vitals-fever",
        source="/services/safety",
        subject="A-1",
        time=INFUSED,
        trialid="NCT07212335",
        data=LabToxicityData(
            site_id="SITE-1",
            subject_id="A-1",
            result_id="VS-3",
            test="TEMP",
            term="Fever",
            grade=2,
            baseline_grade=None,
            previous_grade=1,
            value="39.4",
            unit="C",
            reason="vital signs: 39.4 C is > 39.0 - 40.0 C: grade 2",
            collected_at=INFUSED + timedelta(minutes=45),
            source_event_id="src-vs-3",
            received_at=NOW,
            measured_by="vitals",
        ),
    )
    with Session(db) as session, session.begin():
        apply_signal(session, fever, NOW, protocol=protocol)
    [mail] = rows(db, Delivery)
    assert mail.body_text.startswith("Vital-sign finding: Fever grade 2.")
    assert "Vital sign: TEMP = 39.4 C" in mail.body_text and "Baseline" not in mail.body_text
