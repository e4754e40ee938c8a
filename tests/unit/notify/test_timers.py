"""Escalation, reminders and overdue pages on a fake clock, through the durable timers and the dispatcher."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session

from services.notify.alert_actions import ActionRefused
from services.notify.models import Alert, Timer
from services.notify.obligations import ObligationConflict
from shared.db import make_engine
from tests.unit.conftest import START
from tests.unit.notify.conftest import Notifier, act

SO = "safety.officer@sentinel.example"
MM = "medical.monitor@sentinel.example"
PI = "principal.investigator@sentinel.example"
DUE = START + timedelta(hours=24)
TICK = timedelta(microseconds=1)


def to(sent: list[tuple[str, str]]) -> list[str]:
    return sorted(recipient for recipient, _ in sent)


async def test_initial_notification_is_step_one_and_unacknowledged_alerts_climb_the_steps(
    notifier: Notifier, make_sae: Any
) -> None:
    notifier.apply(make_sae())
    assert to(await notifier.at(START)) == [MM, SO], "the initial mail is escalation step 1: no extra page"
    assert to(await notifier.at(START + timedelta(minutes=30) - TICK)) == []
    sent = await notifier.at(START + timedelta(minutes=30))
    assert to(sent) == [MM]
    assert "Escalation step 2 of 3" in sent[0][1]
    assert to(await notifier.at(START + timedelta(minutes=90) - TICK)) == []
    assert to(await notifier.at(START + timedelta(minutes=90))) == [PI]
    assert to(await notifier.at(START + timedelta(hours=11))) == [], "after the last step, paging stops"
    assert [h.action for h in notifier.history()].count("escalated") == 2
    assert notifier.only(Alert).escalation_step == 2


async def test_reminders_fire_at_12_4_and_1_hours_before_the_deadline(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")
    await notifier.at(START)
    for hours in (12, 4, 1):
        instant = DUE - timedelta(hours=hours)
        assert to(await notifier.at(instant - TICK)) == [], f"nothing just before the {hours} h reminder"
        sent = await notifier.at(instant)
        assert to(sent) == [MM, SO], f"{hours} h reminder to the SAE roles"
        assert all(f"({hours} h left)" in subject for _, subject in sent)
    reminders = [h for h in notifier.history() if h.action == "reminder_sent"]
    assert [r.at for r in reminders] == [DUE - timedelta(hours=h) for h in (12, 4, 1)]
    assert not any("late" in r.detail for r in reminders)


async def test_acknowledged_but_not_completed_keeps_reminding_and_escalates_on_the_deadline(
    notifier: Notifier, make_sae: Any
) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    notifier.clock.advance(timedelta(minutes=10))
    took = act(notifier, "acknowledge", actor="dr.so")
    assert took == timedelta(minutes=10)
    assert to(await notifier.at(START + timedelta(hours=2))) == [], "acknowledged: no escalation steps"
    assert to(await notifier.at(DUE - timedelta(hours=12))) == [MM, SO], "but reminders continue"
    await notifier.at(DUE - timedelta(hours=4))
    await notifier.at(DUE - timedelta(hours=1))
    assert to(await notifier.at(DUE)) == [], "not overdue at the deadline itself"
    assert notifier.obligation().state == "open"
    sent = await notifier.at(DUE + TICK)
    assert to(sent) == [MM, SO], "overdue: the SAE roles plus the next tier (step 2 = medical monitor)"
    assert all("OVERDUE" in subject for _, subject in sent)
    obligation = notifier.obligation()
    assert obligation.state == "overdue", "the overdue transition is persisted, not only derived"
    assert obligation.overdue_at == DUE + TICK
    assert to(await notifier.at(DUE + timedelta(minutes=60) - TICK)) == []
    assert to(await notifier.at(DUE + timedelta(minutes=60))) == [MM, PI, SO], "repeat climbs to the last tier"
    assert to(await notifier.at(DUE + timedelta(minutes=120))) == [MM, PI, SO], "and repeats every 60 min"
    actions = [h.action for h in notifier.history()]
    assert actions.count("overdue") == 1 and actions.count("overdue_repeat") == 2


async def test_completion_stops_everything(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    notifier.clock.advance(timedelta(minutes=5))
    took = act(notifier, "complete", actor="dr.so", reference="MW-2026-001")
    assert took == timedelta(minutes=5), "time to complete runs from the clock's start (awareness)"
    assert notifier.pending() == []
    assert to(await notifier.at(DUE + timedelta(days=3))) == []
    alert = notifier.only(Alert)
    assert alert.state == "resolved"
    cancelled = {t.kind for t in notifier.rows(Timer, state="cancelled")}
    assert cancelled == {"escalate", "reminder", "overdue"}
    with pytest.raises(ObligationConflict):
        act(notifier, "cancel", actor="admin", reason="entered in error")


async def test_completing_after_overdue_stops_the_repeats(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    await notifier.at(DUE + timedelta(minutes=1))
    act(notifier, "complete", actor="dr.so", reference="LATE-1")
    assert to(await notifier.at(DUE + timedelta(hours=5))) == []
    [filed] = [h for h in notifier.history() if h.action == "report_filed"]
    assert "after the deadline" in filed.detail


async def test_snooze_holds_escalation_but_never_an_sae_obligations_reminders_or_overdue(
    notifier: Notifier, make_sae: Any
) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    act(notifier, "snooze", actor="dr.so", reason="in theatre", until=START + timedelta(days=2))
    assert to(await notifier.at(START + timedelta(hours=2))) == [], "escalation steps held by the snooze"
    assert to(await notifier.at(DUE - timedelta(hours=12))) == [MM, SO], "reminders are never snoozed"
    assert to(await notifier.at(DUE - timedelta(hours=4))) == [MM, SO]
    assert to(await notifier.at(DUE - timedelta(hours=1))) == [MM, SO]
    assert to(await notifier.at(DUE + TICK)) == [MM, SO], "nor is the overdue page"
    assert to(await notifier.at(DUE + timedelta(hours=1))) == [MM, PI, SO], "nor its repeats"
    assert [h.action for h in notifier.history()].count("escalation_deferred") == 1


async def test_escalation_resumes_when_the_snooze_expires(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    act(notifier, "snooze", actor="dr.so", reason="call me at 10", until=START + timedelta(hours=2))
    assert to(await notifier.at(START + timedelta(minutes=30))) == []
    assert to(await notifier.at(START + timedelta(hours=2))) == [MM], "step 2 pages when the snooze ends"
    assert to(await notifier.at(START + timedelta(hours=3))) == [PI], "step 3 after step 2's wait"


async def test_snooze_needs_a_future_expiry_within_a_week(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    with pytest.raises(ActionRefused, match="future"):
        act(notifier, "snooze", actor="x", reason="r", until=START)
    with pytest.raises(ActionRefused, match="7 days"):
        act(notifier, "snooze", actor="x", reason="r", until=START + timedelta(days=8))


async def test_restart_fires_a_missed_action_once_marked_late(notifier: Notifier, make_sae: Any, tmp_path: Any) -> None:
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")
    await notifier.at(START)
    # The notifier is down from 10:00 until 3 h after the 12 h reminder was due.
    down_until = DUE - timedelta(hours=9)
    restarted = Notifier(
        engine=make_engine(str(notifier.engine.url)),
        protocol=notifier.protocol,
        clock=notifier.clock,
        channel=notifier.channel,
    )
    sent = await restarted.at(down_until)
    assert to(sent) == [MM, SO], "the missed reminder fires once, on start"
    assert to(await restarted.at(down_until + timedelta(seconds=5))) == []
    [reminder] = [h for h in restarted.history() if h.action == "reminder_sent"]
    assert "late by 3 h" in reminder.detail
    assert reminder.facts["late"] is True
    assert to(await restarted.at(DUE - timedelta(hours=4))) == [MM, SO], "the next one is on time again"
    lateness = restarted.registry.get_sample_value("sentinel_notify_timer_lateness_seconds_sum", {"kind": "reminder"})
    assert lateness == pytest.approx(3 * 3600)
    restarted.engine.dispose()


async def test_missed_overdue_repeats_fire_once_not_one_per_missed_hour(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")
    await notifier.at(DUE + TICK)
    assert to(await notifier.at(DUE + timedelta(hours=5, minutes=30))) == [MM, PI, SO]
    [nxt] = [t for t in notifier.pending() if t.kind == "overdue"]
    assert nxt.due_at == DUE + timedelta(hours=6), "the next repeat stays on the hourly grid"


async def test_reminders_missed_while_down_collapse_into_the_latest_due(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")
    await notifier.at(START)
    sent = await notifier.at(DUE - timedelta(minutes=30))
    assert to(sent) == [MM, SO], "one reminder (the 1 h one, late), not three"
    assert "(30 min left)" in sent[0][1]
    skipped = notifier.rows(Timer, state="skipped")
    assert sorted(t.step for t in skipped if t.kind == "reminder") == [0, 1]
    sent = await notifier.at(DUE + timedelta(hours=2))
    assert [s for _, s in sent if "Reminder" in s] == [], "past the deadline only the overdue page goes out"


async def test_sae_arriving_late_schedules_only_reminders_still_ahead(notifier: Notifier, make_sae: Any) -> None:
    notifier.clock.set(START + timedelta(hours=21))
    notifier.apply(make_sae())
    reminders = [t for t in notifier.pending() if t.kind == "reminder"]
    assert [t.due_at for t in reminders] == [DUE - timedelta(hours=1)]


async def test_sae_arriving_after_its_deadline_is_overdue_at_once(notifier: Notifier, make_sae: Any) -> None:
    notifier.clock.set(DUE + timedelta(hours=2))
    notifier.apply(make_sae())
    sent = await notifier.at(notifier.clock.now())
    assert sum("OVERDUE" in s for _, s in sent) >= 2
    assert notifier.obligation().state == "overdue"
    assert not any("late by" in h.detail for h in notifier.history()), "arriving late is not the notifier's lateness"


async def test_worse_follow_up_restarts_paging_after_an_acknowledgement(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    act(notifier, "acknowledge", actor="dr.so")
    notifier.clock.set(START + timedelta(hours=1))
    notifier.apply(make_sae(kind="updated", ae_version=2, grade=4))
    assert to(await notifier.at(START + timedelta(hours=1))) == [MM, SO]
    assert to(await notifier.at(START + timedelta(hours=1, minutes=30))) == [MM], "a new round of steps"
    notifier.apply(make_sae(kind="updated", ae_version=2, grade=4))
    assert to(await notifier.at(START + timedelta(hours=1, minutes=31))) == [], "identical re-delivery: nothing"


async def test_two_runners_fire_each_timer_once(notifier: Notifier, make_sae: Any) -> None:
    for i in range(5):
        notifier.apply(make_sae(ae_id=f"AE-{i}", signal_id=f"s-{i}"))
    other = notifier.new_runner()
    notifier.clock.set(DUE + timedelta(hours=3))
    now = notifier.clock.now()
    first = notifier.timers.fire_due(now, limit=3)
    second = other.fire_due(now, limit=3)
    while notifier.timers.fire_due(now) + other.fire_due(now):
        pass
    assert first + second == 6
    fired = notifier.rows(Timer, state="fired")
    assert len({t.id for t in fired}) == len(fired)
    with Session(notifier.engine) as session:
        from sqlmodel import select

        from services.notify.models import Delivery

        ids = [d.id for d in session.exec(select(Delivery)).all()]
    assert len(ids) == len(set(ids))


async def test_metrics_count_timers_and_report_open_and_overdue_obligations(notifier: Notifier, make_sae: Any) -> None:
    from services.notify.metrics import StateCollector

    registry = CollectorRegistry()
    registry.register(StateCollector(notifier.engine, notifier.clock))
    notifier.apply(make_sae(ae_id="AE-1", signal_id="s1"))
    notifier.apply(make_sae(ae_id="AE-2", signal_id="s2", awareness_at=START - timedelta(days=2)))
    labels = {"trial": "NCT07212335", "kind": "sae_report"}
    assert registry.get_sample_value("sentinel_notify_obligations", {**labels, "state": "open"}) == 1
    assert registry.get_sample_value("sentinel_notify_obligations", {**labels, "state": "overdue"}) == 1
    assert registry.get_sample_value("sentinel_notify_alerts_open", {"trial": "NCT07212335", "kind": "sae"}) == 2
    await notifier.at(START)
    fired = notifier.registry.get_sample_value("sentinel_notify_timers_total", {"kind": "overdue", "outcome": "fired"})
    assert fired == 1


async def test_an_earlier_awareness_moves_the_deadline_and_its_reminders_earlier(
    notifier: Notifier, make_sae: Any
) -> None:
    """Version 2 arrived first; version 1 says the site knew 6 h earlier: the report is due 6 h earlier."""
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")
    await notifier.at(START)
    earlier = START - timedelta(hours=6)
    notifier.apply(make_sae(kind="updated", ae_version=1, awareness_at=earlier, signal_id="earlier-awareness"))
    sent = await notifier.at(START)
    assert to(sent) == [MM, SO], "a deadline moved earlier is news: page again"
    act(notifier, "acknowledge", actor="dr.so")  # stops the new paging round, not the reporting clock
    new_due = DUE - timedelta(hours=6)
    assert to(await notifier.at(new_due - timedelta(hours=12) - TICK)) == []
    assert to(await notifier.at(new_due - timedelta(hours=12))) == [MM, SO]
    assert to(await notifier.at(new_due - timedelta(hours=1))) == [MM, SO]
    overdue = await notifier.at(new_due + TICK)
    assert overdue and all(subject.startswith("OVERDUE") or "OVERDUE" in subject for _, subject in overdue)
