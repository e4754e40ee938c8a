"""A floor grade pages and its review obligation escalates, on a real database with a fake clock: safety grades
creatinine 4 x baseline sent without a ULN as "at least grade 3", the signal crosses as JSON (as on Kafka), and
notify's durable timers climb the escalation steps until someone acknowledges, then remind and page overdue
until the review is recorded (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.notify import alert_actions
from services.notify import models as notify_models
from services.notify import store as notify_store
from services.notify.metrics import TimerMetrics
from services.notify.models import Alert, Delivery, Obligation
from services.notify.signals import apply_signal
from services.notify.timers import TimerRunner
from services.safety import models as safety_models
from services.safety.clinical_events import apply_clinical_event
from shared.audit import verify_chain
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import SIGNAL_ADAPTER, LabData, LabResulted, LabToxicity, deterministic_id
from shared.protocol import load_protocol

pytestmark = pytest.mark.integration
DRAWN = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # entered a day after it was drawn
SO = "safety.officer@sentinel.example"
MM = "medical.monitor@sentinel.example"
PI = "principal.investigator@sentinel.example"


def creatinine(n: int, value: str, *, baseline: bool) -> LabResulted:
    return LabResulted(
        id=deterministic_id("inbound", "edc", f"creat-{n}"),
        source="/sources/edc",
        subject="101-001",
        time=DRAWN,
        trialid="NCT07212335",
        siteid="101",
        receivedat=RECEIVED if not baseline else RECEIVED - timedelta(days=10),
        senderid=f"creat-{n}",
        data=LabData(
            result_id=f"L-{n}",
            test="CREAT",
            value=value,
            unit="mg/dL",
            collected_at=DRAWN if not baseline else DRAWN - timedelta(days=10),
            baseline=baseline,
        ),
    )


def test_floor_grade_pages_and_its_review_escalates(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, list({id(t): t for t in [*safety_models.TABLES, *notify_models.TABLES]}.values()))
    protocol = load_protocol(None)
    with Session(engine) as session, session.begin():
        apply_clinical_event(
            session, creatinine(1, "0.8", baseline=True), RECEIVED, protocol=protocol, signals_topic="signals"
        )
    with Session(engine) as session, session.begin():
        out = apply_clinical_event(
            session, creatinine(2, "3.2", baseline=False), RECEIVED, protocol=protocol, signals_topic="signals"
        )
    [outgoing] = out
    signal = SIGNAL_ADAPTER.validate_json(outgoing.envelope.model_dump_json())  # as notify reads it off Kafka
    assert isinstance(signal, LabToxicity)
    assert (signal.data.grade, signal.data.floor) == (3, True)

    clock = FakeClock(RECEIVED + timedelta(minutes=1))
    with Session(engine) as session, session.begin():
        apply_signal(session, signal, clock.now(), protocol=protocol)
    runner = TimerRunner(
        engine=engine, protocol=protocol, clock=clock, metrics=TimerMetrics.create(CollectorRegistry())
    )

    def recipients_at(moment: datetime) -> list[str]:
        with Session(engine) as session:
            before = {d.id for d in session.exec(select(Delivery)).all()}
        clock.set(moment)
        while runner.fire_due(moment):
            pass
        with Session(engine) as session:
            return sorted(d.recipient for d in session.exec(select(Delivery)).all() if d.id not in before)

    with Session(engine) as session:
        alert = session.exec(select(Alert)).one()
        obligation = session.exec(select(Obligation)).one()
        [first] = session.exec(select(Delivery)).all()
    assert "at least grade 3" in alert.title and "at least grade 3" in first.subject
    assert first.recipient == SO
    assert (obligation.kind, obligation.clock_started_at, obligation.clock_basis) == ("lab_review", RECEIVED, "receipt")
    start = RECEIVED + timedelta(minutes=1)
    assert recipients_at(start + timedelta(minutes=29)) == []
    assert recipients_at(start + timedelta(minutes=30)) == [MM], "nobody acknowledged: step 2"
    assert recipients_at(start + timedelta(minutes=90)) == [PI], "still nobody: step 3"

    with Session(engine) as session, session.begin():
        notify_store.lock_audit(session)
        alert = session.exec(select(Alert)).one()
        alert_actions.acknowledge(session, alert=alert, actor="dr.a", comment=None, now=clock.now())
    due = RECEIVED + timedelta(hours=24)
    assert recipients_at(due - timedelta(hours=12)) == [SO], "the review clock runs on after the ack"
    assert recipients_at(due - timedelta(hours=1)) == [SO]
    # overdue: the review's roles and the tier above the highest step paged (already the last: the PI)
    assert recipients_at(due + timedelta(microseconds=1)) == [PI, SO]
    with Session(engine) as session:
        assert session.exec(select(Obligation)).one().state == "overdue"
        kinds = Counter(d.recipient for d in session.exec(select(Delivery)).all())
    assert kinds[SO] >= 4
    assert verify_chain(engine, service="notify")[1] == []
    engine.dispose()
