"""SUSAR signals become one expedited-report obligation per protocol recipient, with the 7/15-day clocks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from services.notify.models import Alert, Obligation
from services.notify.susar_alerts import SUSAR_COMPLETION, SUSAR_FOLLOW_UP, SUSAR_REPORT, recipient_of
from services.safety.expedited import cases
from shared.protocol import Protocol
from tests.unit.notify.conftest import Notifier, act
from tests.unit.safety.clinical import RECEIVED, SIGNALS, Driver, ae

HOSP = {"hospitalization": True}
FATAL = {"death": True}
RECIPIENTS = {"regulator", "ethics-committee", "investigators"}


def _susar_signals(driver: Driver, envelope: Any, now: datetime = RECEIVED) -> list[Any]:
    return [s for s in driver.apply(envelope, now=now) if str(getattr(s, "type", "")).startswith("susar.")]


def _by_kind(notifier: Notifier) -> dict[str, list[Obligation]]:
    rows: list[Obligation] = notifier.rows(Obligation)
    out: dict[str, list[Obligation]] = {}
    for row in rows:
        out.setdefault(row.kind, []).append(row)
    return out


def _recipient(row: Obligation) -> str:
    return recipient_of(row.description)


def test_a_fatal_susar_is_due_at_day_7_and_complete_at_day_15_for_each_recipient(
    engine: Engine, protocol: Protocol, notifier: Notifier
) -> None:
    driver = Driver(engine, protocol)
    fatal = ae("S-001", term="Pneumonitis", grade=5, relatedness="probable", seriousness=FATAL, outcome="fatal")
    for signal in _susar_signals(driver, fatal):
        notifier.apply(signal)
    kinds = _by_kind(notifier)
    assert {_recipient(o) for o in kinds[SUSAR_REPORT]} == RECIPIENTS
    assert {o.due_at for o in kinds[SUSAR_REPORT]} == {RECEIVED + timedelta(days=7)}
    assert {_recipient(o) for o in kinds[SUSAR_COMPLETION]} == RECIPIENTS
    assert {o.due_at for o in kinds[SUSAR_COMPLETION]} == {RECEIVED + timedelta(days=15)}
    assert notifier.only(Alert).kind == "susar"


async def test_reminders_overdue_pages_and_completion_with_a_reference_per_recipient(
    engine: Engine, protocol: Protocol, notifier: Notifier
) -> None:
    driver = Driver(engine, protocol)
    notifier.clock.set(RECEIVED)
    for signal in _susar_signals(
        driver, ae("S-001", term="Pneumonitis", grade=3, relatedness="possible", seriousness=HOSP)
    ):
        notifier.apply(signal)
    reports = _by_kind(notifier)[SUSAR_REPORT]
    assert {o.due_at for o in reports} == {RECEIVED + timedelta(days=15)}
    assert SUSAR_COMPLETION not in _by_kind(notifier)
    sent = await notifier.at(RECEIVED + timedelta(days=15) - timedelta(hours=12))
    assert any("Reminder: SUSAR report" in subject for _to, subject in sent)
    regulator = next(o for o in reports if _recipient(o) == "regulator")
    with Session(notifier.engine) as session:
        alert = session.exec(select(Alert)).one()
        row = session.get(Obligation, regulator.id)
    act(notifier, "complete", alert=alert, obligation=row, actor="officer", reference="EV-2026-0001")
    sent = await notifier.at(RECEIVED + timedelta(days=15, minutes=5))
    assert any("OVERDUE: SUSAR report" in subject for _to, subject in sent), sent  # the two others
    states = {_recipient(o): (o.state, o.reference) for o in _by_kind(notifier)[SUSAR_REPORT]}
    assert states == {
        "regulator": ("completed", "EV-2026-0001"),
        "ethics-committee": ("overdue", None),
        "investigators": ("overdue", None),
    }


def test_an_expected_or_non_serious_ae_opens_no_susar_obligation(
    engine: Engine, protocol: Protocol, notifier: Notifier
) -> None:
    driver = Driver(engine, protocol)
    expected = ae("S-001", term="Infusion related reaction", grade=2, relatedness="definite", seriousness=HOSP)
    non_serious = ae("S-001", ae_id="AE-2", term="Pneumonitis", grade=2, relatedness="definite", serious=False)
    assert _susar_signals(driver, expected) == [] and _susar_signals(driver, non_serious) == []
    assert notifier.rows(Obligation) == []


def test_an_upgrade_to_fatal_moves_the_open_report_to_7_days_from_the_news(
    engine: Engine, protocol: Protocol, notifier: Notifier
) -> None:
    driver = Driver(engine, protocol)
    for signal in _susar_signals(
        driver, ae("S-001", term="Pneumonitis", grade=3, relatedness="possible", seriousness=HOSP)
    ):
        notifier.apply(signal)
    day4 = RECEIVED + timedelta(days=4)
    notifier.clock.set(day4)
    v2 = ae(
        "S-001", version=2, term="Pneumonitis", grade=5, relatedness="possible", seriousness=HOSP | FATAL, received=day4
    )
    for signal in _susar_signals(driver, v2, now=day4):
        notifier.apply(signal)
    kinds = _by_kind(notifier)
    assert {o.due_at for o in kinds[SUSAR_REPORT]} == {day4 + timedelta(days=7)}  # was day 15
    assert {o.clock_started_at for o in kinds[SUSAR_REPORT]} == {RECEIVED}  # day 0 unchanged
    assert {o.due_at for o in kinds[SUSAR_COMPLETION]} == {day4 + timedelta(days=15)}
    assert any(e.action == "susar_upgraded" for e in notifier.history())


def test_follow_up_information_on_a_filed_report_opens_a_15_day_follow_up(
    engine: Engine, protocol: Protocol, notifier: Notifier
) -> None:
    driver = Driver(engine, protocol)
    for signal in _susar_signals(
        driver, ae("S-001", term="Pneumonitis", grade=3, relatedness="possible", seriousness=HOSP)
    ):
        notifier.apply(signal)
    regulator = next(o for o in _by_kind(notifier)[SUSAR_REPORT] if _recipient(o) == "regulator")
    with Session(notifier.engine) as session:
        alert, row = session.exec(select(Alert)).one(), session.get(Obligation, regulator.id)
    act(notifier, "complete", alert=alert, obligation=row, actor="officer", reference="EV-1")
    day9 = RECEIVED + timedelta(days=9)
    v2 = ae(
        "S-001",
        version=2,
        term="Pneumonitis",
        grade=3,
        relatedness="possible",
        seriousness=HOSP,
        outcome="recovered",
        received=day9,
    )
    for signal in _susar_signals(driver, v2, now=day9):
        notifier.apply(signal)
    [follow_up] = _by_kind(notifier)[SUSAR_FOLLOW_UP]  # only the regulator's report was filed
    assert _recipient(follow_up) == "regulator" and follow_up.due_at == day9 + timedelta(days=15)


def test_withdrawal_cancels_the_open_reports_with_the_reason(
    engine: Engine, protocol: Protocol, notifier: Notifier
) -> None:
    driver = Driver(engine, protocol)
    for signal in _susar_signals(
        driver, ae("S-001", term="Pneumonitis", grade=3, relatedness="possible", seriousness=HOSP)
    ):
        notifier.apply(signal)
    with Session(engine) as session, session.begin():
        _case, out = cases.record_expectedness(
            session,
            protocol=protocol,
            trial_id="NCT07212335",
            subject_id="S-001",
            ae_id="AE-1",
            expectedness="expected",
            actor="officer",
            reason="listed in the IB under its LLT",
            now=RECEIVED + timedelta(hours=2),
            signals_topic=SIGNALS,
        )
    for outgoing in out:
        notifier.apply(outgoing.envelope)
    rows = notifier.rows(Obligation)
    assert rows and all(o.state == "cancelled" and "no longer a SUSAR" in (o.cancel_reason or "") for o in rows)


def _data(**overrides: Any) -> Any:
    from shared.events import SusarData

    values: dict[str, Any] = {
        "case_id": "c",
        "site_id": "SITE-1",
        "subject_id": "S-001",
        "ae_id": "AE-1",
        "ae_version": 2,
        "report_version": 2,
        "term": "Pneumonitis",
        "meddra_code": "10035742",
        "grade": 5,
        "criteria": ["death"],
        "fatal_or_life_threatening": True,
        "site_relatedness": "possible",
        "sponsor_causality": None,
        "expectedness": "unexpected",
        "expectedness_basis": "rsi_proposal",
        "rsi_version": "2.0",
        "change": "upgraded",
        "clock_start": RECEIVED,
        "clock_basis": "receipt",
        "upgraded_at": RECEIVED + timedelta(days=20),
        "changed_at": RECEIVED + timedelta(days=20),
        "reason": "r",
        "source_event_id": "evt-2",
    }
    values.update(overrides)
    return SusarData.model_validate(values)


def test_an_upgrade_after_the_report_was_filed_needs_a_7_day_follow_up(protocol: Protocol) -> None:
    from services.notify.susar_alerts import ReportState, plan_follow_ups, plan_upgrade

    rules = protocol.expedited_reporting
    assert rules is not None
    filed = [ReportState(r, f"o-{r.id}", "completed", RECEIVED + timedelta(days=15)) for r in rules.recipients]
    known = RECEIVED + timedelta(days=20)
    plan = plan_upgrade("NCT07212335", _data(), rules, filed)
    assert plan.move == ()
    follow_ups = [o for o in plan.add if o.kind == SUSAR_FOLLOW_UP]
    assert {recipient_of(o.description) for o in follow_ups} == RECIPIENTS
    assert {o.due_at for o in follow_ups} == {known + timedelta(days=7)}  # EU CTR Art. 42(2)(c)
    assert {o.due_at for o in plan.add if o.kind == SUSAR_COMPLETION} == {known + timedelta(days=15)}
    quiet = rules.model_copy(update={"follow_up_reports": False})
    assert plan_follow_ups("NCT07212335", _data(change="follow_up"), quiet, filed, pending=set()) == []
    assert len(plan_follow_ups("NCT07212335", _data(change="follow_up"), rules, filed, pending={"regulator"})) == 2


def test_the_sponsor_calling_it_related_starts_15_days_from_that_decision(
    engine: Engine, protocol: Protocol, notifier: Notifier
) -> None:
    driver = Driver(engine, protocol)
    site_unlikely = ae("S-001", term="Pneumonitis", grade=3, relatedness="unlikely", seriousness=HOSP)
    assert _susar_signals(driver, site_unlikely) == []
    decided = RECEIVED + timedelta(days=2)
    with Session(engine) as session, session.begin():
        _case, out = cases.record_causality(
            session,
            protocol=protocol,
            trial_id="NCT07212335",
            subject_id="S-001",
            ae_id="AE-1",
            causality="related",
            actor="officer",
            reason="temporal association, no alternative cause",
            now=decided,
            signals_topic=SIGNALS,
        )
    for outgoing in out:
        notifier.apply(outgoing.envelope)
    reports = _by_kind(notifier)[SUSAR_REPORT]
    assert {o.due_at for o in reports} == {decided + timedelta(days=15)}
    assert {o.clock_started_at for o in reports} == {decided}
