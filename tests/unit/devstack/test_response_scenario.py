"""The demo's response scenario, through ingest's parsing and safety's service layer: a CR by week 4, then lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session

from services.devstack.scenario import response_events
from services.ingest.normalise import parse_body, to_envelope
from services.safety.models import ResponseStateRow
from services.safety.sweep import run_sweep
from shared.events import CLINICAL_ADAPTER, AssessmentMissed
from shared.protocol import Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, of_type

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)


def apply(driver: Driver, events: list[dict[str, object]]) -> list[object]:
    signals: list[object] = []
    for canonical in parse_body(json.dumps({"events": events}).encode()):
        envelope = CLINICAL_ADAPTER.validate_python(to_envelope("edc", canonical, NOW).model_dump())
        signals += driver.apply(envelope, now=NOW)
    return signals


def test_a_complete_response_at_week_4_that_a_transfusion_ends(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    events = response_events(protocol.trial_id, NOW, subject="101-900", lose_it=True)
    signals = apply(driver, events[:-1])
    assert not of_type(signals, "response.lost")  # type: ignore[arg-type]
    sweep = run_sweep(engine, protocol=protocol, now=NOW, signals_topic=SIGNALS)
    missed = [o.envelope for o in sweep if isinstance(o.envelope, AssessmentMissed)]
    # the scenario posts no infusion-day vital signs (their gaps are another test's subject)
    assert not [m for m in missed if "vital signs" not in m.data.assessment], "no visit or sample missed"
    with Session(engine) as session:
        week4 = session.get(ResponseStateRow, (protocol.trial_id, "101-900", "week 4"))
    assert week4 is not None and week4.level == "complete"
    assert week4.since == NOW - timedelta(days=10)  # day 20
    assert Decimal(week4.duration_days or "0") > 8
    [lost] = of_type(apply(driver, events[-1:]), "response.lost")  # type: ignore[arg-type]
    assert (lost.data.previous_level, lost.data.level) == ("complete", "none")
