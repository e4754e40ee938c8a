"""Notify's service layer for clocks: which timer rows an alert or obligation needs, and when they stop.

- Opening (or re-opening on worse news) an alert that escalates pages step 0 at once (the initial
  notification) and schedules step 1 after step 0's wait; each later step schedules the next.
- Acknowledging cancels the pending escalation steps, and nothing else.
- An obligation gets its reminders (counted back from its deadline) and its overdue timer when it opens;
  only completing or cancelling it cancels them. A snooze changes none of these rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.notify import escalation, store
from services.notify.models import Alert, Obligation
from shared.events import deterministic_id
from shared.protocol import Protocol

ESCALATE = "escalate"
REMINDER = "reminder"
OVERDUE = "overdue"
FAILOVER = "failover"
OBLIGATION_TIMERS = (REMINDER, OVERDUE)


def escalate_timer_id(alert_id: str, round_: int, step: int) -> str:
    return deterministic_id("timer", ESCALATE, alert_id, str(round_), str(step))


def reminder_timer_id(obligation_id: str, number: int) -> str:
    return deterministic_id("timer", REMINDER, obligation_id, str(number))


def overdue_timer_id(obligation_id: str, repeat: int) -> str:
    return deterministic_id("timer", OVERDUE, obligation_id, str(repeat))


def failover_timer_id(delivery_id: str) -> str:
    return deterministic_id("timer", FAILOVER, delivery_id)


def start_escalation(session: Session, *, alert: Alert, protocol: Protocol, now: datetime) -> None:
    """A new paging round: step 0 has just been queued by the caller; step 1 waits for an acknowledgement."""
    if alert.escalation_round:  # an alert never paged before has no escalation timer to supersede
        store.cancel_timers(session, alert_id=alert.id, kinds=[ESCALATE], reason="superseded by a new paging round")
    alert.escalation_round += 1
    alert.escalation_step = 0
    alert.paged_at = now
    session.add(alert)
    schedule_next_step(session, alert=alert, protocol=protocol, step=0, paged_at=now, now=now)


def schedule_next_step(
    session: Session, *, alert: Alert, protocol: Protocol, step: int, paged_at: datetime, now: datetime
) -> None:
    following = escalation.next_step_at(protocol.escalation, step=step, paged_at=paged_at)
    if following is None:
        return
    next_step, at = following
    store.schedule_timer(
        session,
        timer_id=escalate_timer_id(alert.id, alert.escalation_round, next_step),
        kind=ESCALATE,
        alert_id=alert.id,
        step=next_step,
        round_=alert.escalation_round,
        due_at=at,
        now=now,
    )


def stop_escalation(session: Session, *, alert_id: str, reason: str) -> int:
    return store.cancel_timers(session, alert_id=alert_id, kinds=[ESCALATE], reason=reason)


def schedule_obligation(session: Session, *, obligation: Obligation, protocol: Protocol, now: datetime) -> None:
    """Reminders still ahead of `now`, and the overdue page (at once if the deadline has already passed)."""
    for reminder in escalation.reminder_instants(
        deadline=obligation.due_at, hours_before=protocol.escalation.reminders_before_deadline_hours, after=now
    ):
        store.schedule_timer(
            session,
            timer_id=reminder_timer_id(obligation.id, reminder.number),
            kind=REMINDER,
            alert_id=obligation.alert_id,
            obligation_id=obligation.id,
            step=reminder.number,
            note=f"{reminder.hours_before} h before the deadline",
            due_at=reminder.at,
            now=now,
        )
    store.schedule_timer(
        session,
        timer_id=overdue_timer_id(obligation.id, 0),
        kind=OVERDUE,
        alert_id=obligation.alert_id,
        obligation_id=obligation.id,
        step=0,
        due_at=max(escalation.overdue_at(obligation.due_at), now),
        now=now,
    )


def move_deadline_earlier(
    session: Session,
    *,
    obligation: Obligation,
    protocol: Protocol,
    started_at: datetime,
    basis: str,
    due_at: datetime,
    now: datetime,
) -> None:
    """The clock started earlier than we knew (an older version reported an earlier awareness): re-date its
    pending reminders and overdue page; reminders whose time has now passed are skipped, not sent late."""
    obligation.clock_started_at = started_at
    obligation.clock_basis = basis
    obligation.due_at = due_at
    session.add(obligation)
    _redate_timers(session, obligation=obligation, protocol=protocol, now=now)


def reopen_obligation(session: Session, *, obligation: Obligation, protocol: Protocol, now: datetime) -> None:
    """An obligation a system cancellation closed is open again (a SUSAR withdrawn, then re-detected with the day 0
    it had: the withdrawal was wrong): its cancelled reminders and overdue page are pending again, re-dated to its
    (possibly new) deadline, the overdue page at once if that has passed."""
    obligation.state = "open"
    obligation.cancelled_at = None
    obligation.cancelled_by = None
    obligation.cancel_reason = None
    session.add(obligation)
    store.revive_timers(session, obligation_id=obligation.id, kinds=OBLIGATION_TIMERS)
    schedule_obligation(session, obligation=obligation, protocol=protocol, now=now)  # what the first round lacked
    _redate_timers(session, obligation=obligation, protocol=protocol, now=now)


def _redate_timers(session: Session, *, obligation: Obligation, protocol: Protocol, now: datetime) -> None:
    instants = {
        r.number: r.at
        for r in escalation.reminder_instants(
            deadline=obligation.due_at, hours_before=protocol.escalation.reminders_before_deadline_hours, after=now
        )
    }
    for timer in store.pending_timers(session, alert_id=obligation.alert_id, kinds=[REMINDER, OVERDUE]):
        if timer.obligation_id != obligation.id:
            continue
        if timer.kind == OVERDUE:
            timer.due_at = max(escalation.overdue_at(obligation.due_at), now)
        elif timer.step in instants:
            timer.due_at = instants[timer.step]
        else:
            timer.state = "skipped"
            timer.note = "the deadline moved earlier; this reminder's time had passed"
        session.add(timer)


def stop_obligation_clock(session: Session, *, obligation: Obligation, reason: str) -> int:
    return store.cancel_timers(session, obligation_id=obligation.id, kinds=OBLIGATION_TIMERS, reason=reason)


def resolve_if_done(session: Session, *, alert: Alert, now: datetime) -> bool:
    """When an alert's last open obligation closes, nothing is left to page about: the alert is resolved.

    The caller records the closing action, saying whether it resolved the alert (one fact, one entry).
    """
    if alert.state == "resolved" or store.open_obligations(session, alert_id=alert.id):
        return False
    if not store.obligations_for(session, alert_ids=[alert.id]):
        return False  # an informational alert: only an acknowledgement closes it
    stop_escalation(session, alert_id=alert.id, reason="every obligation closed")
    alert.state = "resolved"
    alert.updated_at = now
    session.add(alert)
    return True
