"""A SUSAR's versions delivered out of order (a rebalance, a dead-letter replay): safety's signals, applied by
notify, leave the same report deadlines as in order, with no duplicate or contradictory page; a day 0 that turns
out earlier moves the deadlines earlier and says OVERDUE when one is already past."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from services.notify import models as notify_models
from services.notify.models import Alert, Obligation
from services.notify.susar_alerts import (
    SUSAR_COMPLETION,
    SUSAR_FOLLOW_UP,
    SUSAR_REPORT,
    ReportState,
    plan_earlier_clock,
    recipient_of,
)
from services.safety.models import SusarCase
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import AeReported, SusarData
from shared.protocol import Protocol
from tests.unit.notify.conftest import Notifier, act
from tests.unit.safety.clinical import RECEIVED, Driver, ae

HOSP = {"hospitalization": True}


def day(n: float) -> datetime:
    return RECEIVED + timedelta(days=n)


def pneumonitis() -> list[AeReported]:
    """v1 grade 2 not serious (day 0), v2 hospitalised (day 1), v3 fatal (day 3): related, not in the RSI."""
    common: dict[str, Any] = {"term": "Pneumonitis", "relatedness": "possible"}
    return [
        ae("S-001", version=1, grade=2, received=day(0), **common),
        ae("S-001", version=2, grade=3, seriousness=HOSP, received=day(1), **common),
        ae("S-001", version=3, grade=5, seriousness=HOSP | {"death": True}, outcome="fatal", received=day(3), **common),
    ]


class Run:
    """Safety and notify on one database; each event processed at `now` (its receipt, unless delivered late)."""

    def __init__(self, tmp_path: Path, name: str, protocol: Protocol) -> None:
        engine = make_engine(f"sqlite:///{tmp_path}/{name}.db")
        create_tables(engine, notify_models.TABLES)
        self.driver = Driver(engine, protocol)
        self.notifier = Notifier(engine=engine, protocol=protocol, clock=FakeClock(RECEIVED))
        self.signals: list[Any] = []

    def deliver(self, events: Sequence[AeReported], *, now: datetime | None = None) -> list[Any]:
        out = []
        for event in events:
            moment = now or event.receivedat
            self.notifier.clock.set(moment)
            for signal in self.driver.apply(event, now=moment):
                if str(getattr(signal, "type", "")).startswith("susar."):
                    self.notifier.apply(signal)
                    out.append(signal)
        self.signals += out
        return out

    def deadlines(self) -> list[tuple[str, str, datetime, datetime, str]]:
        """(kind, recipient, clock start, due, state) of every SUSAR obligation still standing."""
        rows: list[Obligation] = self.notifier.rows(Obligation)
        return sorted(
            (o.kind, recipient_of(o.description), o.clock_started_at, o.due_at, o.state)
            for o in rows
            if o.state != "cancelled"
        )

    def pages(self) -> list[str]:
        return sorted({d.subject for d in self.notifier.deliveries()})

    def case(self) -> tuple[Any, ...]:
        with Session(self.driver.engine) as session:
            c = session.exec(select(SusarCase)).one()
            return (c.susar, c.clock_start, c.fatal_or_life_threatening, c.upgraded_at, c.signalled_version)


def test_the_fatal_version_first_ends_with_the_deadlines_of_the_receipt_order(
    protocol: Protocol, tmp_path: Path
) -> None:
    """In order: detected on day 1 (15 days), upgraded on day 3 (report due day 3 + 7, completion day 3 + 15).
    v3 before v2 (both redelivered on day 3): detected as fatal on day 3, then v2 moves day 0 to day 1 and leaves
    every deadline where it is: one clock_earlier, no page, the same obligations."""
    v1, v2, v3 = pneumonitis()
    in_order = Run(tmp_path, "in-order", protocol)
    in_order.deliver([v1, v2, v3])
    assert [s.data.change for s in in_order.signals] == ["detected", "upgraded"]

    reordered = Run(tmp_path, "reordered", protocol)
    reordered.deliver([v1])
    reordered.deliver([v3, v2], now=day(3))
    assert [s.data.change for s in reordered.signals] == ["detected", "clock_earlier"]
    assert reordered.case() == in_order.case() == (True, day(1), True, day(3), 3)
    assert reordered.deadlines() == in_order.deadlines()
    reports = {(d[0], d[2], d[3]) for d in in_order.deadlines()}
    assert reports == {(SUSAR_REPORT, day(1), day(3 + 7)), (SUSAR_COMPLETION, day(3), day(3 + 15))}
    assert not any("day 0 earlier" in subject for subject in reordered.pages()), "nothing moved: nothing to page"
    [alert] = reordered.notifier.rows(Alert)
    actions = [e.action for e in reordered.notifier.history(alert.id)]
    assert actions.count("susar_detected") == 1 and "susar_clock_earlier" in actions


async def test_a_version_received_weeks_ago_and_processed_now_makes_the_report_overdue_and_says_so(
    protocol: Protocol, tmp_path: Path
) -> None:
    """v2 (hospitalised, day 1) was dead-lettered and replayed on day 22, after v3 (grade 4, day 20) had opened a
    15-day report due day 35. Day 0 is day 1: the report was due on day 16. The page says OVERDUE, the
    obligations become overdue at once, and no second set of reports is opened."""
    common: dict[str, Any] = {"term": "Pneumonitis", "relatedness": "possible", "seriousness": HOSP}
    v2 = ae("S-001", version=2, grade=3, received=day(1), **common)
    v3 = ae("S-001", version=3, grade=4, received=day(20), **common)
    run = Run(tmp_path, "late", protocol)
    run.deliver([v3])
    await run.notifier.at(day(20))
    assert {(d[0], d[3]) for d in run.deadlines()} == {(SUSAR_REPORT, day(35))}
    run.deliver([v2], now=day(22))
    assert [s.data.change for s in run.signals] == ["detected", "clock_earlier"]
    assert {(d[0], d[2], d[3]) for d in run.deadlines()} == {(SUSAR_REPORT, day(1), day(16))}
    sent = await run.notifier.at(day(22))
    assert any("SUSAR day 0 earlier: report OVERDUE" in subject for _to, subject in sent), sent
    assert any("OVERDUE: SUSAR report" in subject for _to, subject in sent), sent
    assert {d[4] for d in run.deadlines()} == {"overdue"}
    assert len(run.deadlines()) == len(protocol.expedited_reporting.recipients)  # type: ignore[union-attr]
    run.deliver([v2], now=day(23))  # the same event again: a no-op
    assert len(run.signals) == 2


def test_an_upgrade_after_day_0_moved_finds_the_report_opened_on_the_later_day_0(
    protocol: Protocol, tmp_path: Path
) -> None:
    """v3 (grade 4, day 5) opens the report, v2 (day 1) moves day 0, v4 (fatal, day 6) upgrades: the report
    opened on day 5's id is moved to 7 days from day 6, no follow-up is opened for it."""
    common: dict[str, Any] = {"term": "Pneumonitis", "relatedness": "possible", "seriousness": HOSP}
    v2 = ae("S-001", version=2, grade=3, received=day(1), **common)
    v3 = ae("S-001", version=3, grade=4, received=day(5), **common)
    v4 = ae("S-001", version=4, grade=5, received=day(6), **{**common, "seriousness": HOSP | {"death": True}})
    run = Run(tmp_path, "moved-then-upgraded", protocol)
    run.deliver([v3, v2, v4], now=day(6))
    assert [s.data.change for s in run.signals] == ["detected", "clock_earlier", "upgraded"]
    kinds = {d[0] for d in run.deadlines()}
    assert SUSAR_FOLLOW_UP not in kinds
    assert {(d[0], d[3]) for d in run.deadlines() if d[0] == SUSAR_REPORT} == {(SUSAR_REPORT, day(6 + 7))}
    assert {(d[0], d[3]) for d in run.deadlines() if d[0] == SUSAR_COMPLETION} == {(SUSAR_COMPLETION, day(6 + 15))}


def _data(**overrides: Any) -> SusarData:
    values: dict[str, Any] = {
        "case_id": "c",
        "site_id": "SITE-1",
        "subject_id": "S-001",
        "ae_id": "AE-1",
        "ae_version": 3,
        "report_version": 2,
        "term": "Pneumonitis",
        "meddra_code": None,
        "grade": 5,
        "criteria": ["death"],
        "fatal_or_life_threatening": True,
        "site_relatedness": "possible",
        "sponsor_causality": None,
        "expectedness": "unexpected",
        "expectedness_basis": "rsi_proposal",
        "rsi_version": "2.0",
        "change": "clock_earlier",
        "clock_start": day(1),
        "clock_basis": "receipt",
        "upgraded_at": day(3),
        "changed_at": day(1),
        "reason": "r",
        "source_event_id": "evt-2",
    }
    values.update(overrides)
    return SusarData.model_validate(values)


@pytest.mark.parametrize(
    ("state", "due", "moved"),
    [("open", day(3 + 7), False), ("open", day(20), True), ("overdue", day(20), True), ("completed", day(20), False)],
)
def test_an_earlier_day_0_moves_open_reports_only_and_never_later(
    protocol: Protocol, state: str, due: datetime, moved: bool
) -> None:
    rules = protocol.expedited_reporting
    assert rules is not None
    reports = [ReportState(r, f"report-{r.id}", state, due) for r in rules.recipients]
    completions = [ReportState(r, f"completion-{r.id}", "open", day(3 + 15)) for r in rules.recipients]
    plan = plan_earlier_clock("NCT07212335", _data(), rules, reports, completions)
    assert plan.add == ()
    assert [m[1:] for m in plan.move] == ([(day(3 + 7), day(1))] * len(rules.recipients) if moved else [])
    if state == "open" and not moved:
        assert {r[1] for r in plan.restart} == {day(1)}


def test_an_earlier_day_0_on_a_report_filed_before_it_was_known_fatal_needs_the_7_day_follow_up(
    protocol: Protocol,
) -> None:
    """The report was filed as a 15-day case; notify holds no completion, so it did not know the case fatal:
    a follow-up due 7 days from that knowledge, and the completion, as for an upgrade (EU CTR Art. 42(2)(c))."""
    rules = protocol.expedited_reporting
    assert rules is not None
    filed = [ReportState(r, f"report-{r.id}", "completed", day(16)) for r in rules.recipients]
    plan = plan_earlier_clock("NCT07212335", _data(), rules, filed, [])
    assert plan.move == ()
    assert {(o.kind, o.due_at) for o in plan.add} == {(SUSAR_FOLLOW_UP, day(3 + 7)), (SUSAR_COMPLETION, day(3 + 15))}


def test_a_filed_report_is_not_reopened_when_day_0_moves(protocol: Protocol, tmp_path: Path) -> None:
    """The officer filed the day-5 report; v2 (day 1) arrives late: nothing to move, nothing new to file."""
    common: dict[str, Any] = {"term": "Pneumonitis", "relatedness": "possible", "seriousness": HOSP}
    v2 = ae("S-001", version=2, grade=3, received=day(1), **common)
    v3 = ae("S-001", version=3, grade=4, received=day(5), **common)
    run = Run(tmp_path, "filed", protocol)
    run.deliver([v3])
    with Session(run.notifier.engine) as session:
        alert = session.exec(select(Alert)).one()
        rows = session.exec(select(Obligation)).all()
    for row in rows:
        act(run.notifier, "complete", alert=alert, obligation=row, actor="officer", reference=f"EV-{row.id[:4]}")
    run.deliver([v2], now=day(6))
    assert {d[4] for d in run.deadlines()} == {"completed"}
    assert len(run.deadlines()) == len(rows)
