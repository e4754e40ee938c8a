"""The sponsor's assessments as a log the SUSAR clock replays: a re-assessment does not restart day 0, a
superseded confirmation keeps its time, a case from before the log uses its current assessments."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from services.safety.expedited import cases
from services.safety.expedited.susar import Assessment
from services.safety.models import SusarCase
from shared.protocol import Protocol
from tests.unit.safety.clinical import RECEIVED, SIGNALS, Driver, ae

HOSP = {"hospitalization": True}


def assess(engine: Engine, protocol: Protocol, what: str, value: str, now: datetime) -> list[Any]:
    with Session(engine) as session, session.begin():
        common: dict[str, Any] = {
            "protocol": protocol,
            "trial_id": "NCT07212335",
            "subject_id": "S-001",
            "ae_id": "AE-1",
            "actor": "officer@example",
            "reason": "reviewed",
            "now": now,
            "signals_topic": SIGNALS,
        }
        if what == "causality":
            _case, out = cases.record_causality(session, causality=value, **common)  # type: ignore[arg-type]
        else:
            _case, out = cases.record_expectedness(session, expectedness=value, **common)  # type: ignore[arg-type]
        return [o.envelope for o in out]


def case_row(engine: Engine) -> SusarCase:
    with Session(engine, expire_on_commit=False) as session:
        return session.exec(select(SusarCase)).one()


def test_the_sponsor_saying_related_again_does_not_restart_day_0(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    driver.apply(ae("S-001", term="Pneumonitis", grade=3, relatedness="unlikely", seriousness=HOSP))
    first = RECEIVED + timedelta(days=2)
    [detected] = assess(engine, protocol, "causality", "related", first)
    assert detected.data.clock_start == first
    assert assess(engine, protocol, "causality", "related", first + timedelta(days=3)) == []
    case = case_row(engine)
    assert case.clock_start == first and [e["value"] for e in case.assessments or []] == ["related", "related"]


def test_a_late_site_probable_received_before_the_sponsors_decision_moves_day_0_to_its_receipt(
    engine: Engine, protocol: Protocol
) -> None:
    """The sponsor said related on day 2; the site's v2 'probable', received on day 1, is processed on day 3:
    the sponsor had the information on day 1."""
    driver = Driver(engine, protocol)
    driver.apply(ae("S-001", term="Pneumonitis", grade=3, relatedness="unlikely", seriousness=HOSP))
    assess(engine, protocol, "causality", "related", RECEIVED + timedelta(days=2))
    day1 = RECEIVED + timedelta(days=1)
    v2 = ae("S-001", version=2, term="Pneumonitis", grade=3, relatedness="probable", seriousness=HOSP, received=day1)
    [earlier] = [s for s in driver.apply(v2, now=RECEIVED + timedelta(days=3)) if s.type == "susar.updated"]
    assert earlier.data.change == "clock_earlier" and earlier.data.clock_start == day1


def test_a_superseded_override_keeps_its_place_in_time(engine: Engine, protocol: Protocol) -> None:
    """Fever is expected up to grade 2 in the RSI: grade 3 is unexpected, but the officer called it expected on
    day 1 (no SUSAR). A grade 4 received on day 20 supersedes that: day 0 is day 20, not the day-0 receipt of the
    first version (which would make the case overdue at once, although the sponsor had judged it not reportable)."""
    driver = Driver(engine, protocol)
    fever: dict[str, Any] = {"term": "Fever", "relatedness": "probable", "seriousness": HOSP}
    signals = driver.apply(ae("S-001", grade=3, **fever))
    assert [s.type for s in signals if s.type.startswith("susar.")] == ["susar.detected"]
    withdrawn = assess(engine, protocol, "expectedness", "expected", RECEIVED + timedelta(days=1))
    assert [s.type for s in withdrawn] == ["susar.withdrawn"]
    day20 = RECEIVED + timedelta(days=20)
    [detected] = [
        s
        for s in driver.apply(ae("S-001", version=2, grade=4, received=day20, **fever), now=day20)
        if s.type == "susar.detected"
    ]
    assert detected.data.clock_start == day20
    log = case_row(engine).assessments or []
    assert [(e["kind"], e["value"]) for e in log] == [("expectedness", "expected"), ("expectedness", None)]


def test_a_case_from_before_the_log_replays_its_current_assessments(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    driver.apply(ae("S-001", term="Pneumonitis", grade=3, relatedness="unlikely", seriousness=HOSP))
    decided = RECEIVED + timedelta(days=2)
    with Session(engine) as session, session.begin():
        case = session.exec(select(SusarCase)).one()
        case.sponsor_causality, case.causality_at, case.causality_by = "related", decided, "officer"
        case.assessments = None
        session.add(case)
    [made] = cases.assessments_of(case_row(engine))
    assert made == Assessment("causality", "related", decided, "sponsor causality assessment (related) by officer")
    day3 = RECEIVED + timedelta(days=3)
    v2 = ae("S-001", version=2, term="Pneumonitis", grade=3, relatedness="unlikely", seriousness=HOSP, received=day3)
    [detected] = [s for s in driver.apply(v2, now=day3) if s.type == "susar.detected"]
    assert detected.data.clock_start == decided, "day 0 at the sponsor's decision, as recorded before the log"


def test_a_case_from_before_the_log_rebuilds_it_from_its_audit_trail(engine: Engine, protocol: Protocol) -> None:
    """The override-then-superseded Fever case, stored before the log existed: its next version must not backdate
    day 0 to the first receipt (the override, voided since, is in the audit trail only)."""
    driver = Driver(engine, protocol)
    fever: dict[str, Any] = {"term": "Fever", "relatedness": "probable", "seriousness": HOSP}
    driver.apply(ae("S-001", grade=3, **fever))
    assess(engine, protocol, "expectedness", "expected", RECEIVED + timedelta(days=1))
    day20 = RECEIVED + timedelta(days=20)
    driver.apply(ae("S-001", version=2, grade=4, received=day20, **fever), now=day20)
    with Session(engine) as session, session.begin():
        case = session.exec(select(SusarCase)).one()
        case.assessments = None  # as migrated
        session.add(case)
    assert cases.assessments_of(case_row(engine)) == [], "its fields alone no longer show the voided override"
    day25 = RECEIVED + timedelta(days=25)
    signals = driver.apply(ae("S-001", version=3, grade=4, received=day25, **fever), now=day25)
    assert [s.data.change for s in signals if s.type.startswith("susar.")] == ["follow_up"]
    case = case_row(engine)
    assert case.clock_start == day20
    assert [(e["value"], e["at"]) for e in case.assessments or []] == [
        ("expected", (RECEIVED + timedelta(days=1)).isoformat()),
        (None, day20.isoformat()),
    ]
