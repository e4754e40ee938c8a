"""Notify's service layer for due timers: what an escalation step, a reminder, an overdue page or a
failover does when it fires, inside the transaction that marks the timer fired.

Messages a timer queues take their ids from the timer's id, so even a repeated firing mails nobody twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlmodel import Session

from services.notify import escalation, scheduling, store
from services.notify.mail_content import ObligationLine, duration_text, timed_mail, when
from services.notify.models import Alert, Delivery, Obligation, Timer
from services.notify.obligations import OPEN_STATES, label, reminded_roles
from services.notify.sae_alerts import messages_to
from shared.protocol import Protocol

SYSTEM = "system"
Outcome = Literal["fired", "skipped", "deferred"]


def fire(session: Session, timer: Timer, *, now: datetime, protocol: Protocol, late_by: timedelta | None) -> Outcome:
    """Do what the timer is for; `late_by` is set when it fires noticeably after its due time (a restart)."""
    alert = session.get(Alert, timer.alert_id)
    if alert is None:
        raise LookupError(f"timer {timer.id} names alert {timer.alert_id}, which does not exist")
    late = f" (late by {duration_text(late_by)}: was due {when(timer.due_at)})" if late_by is not None else ""
    if timer.kind == scheduling.ESCALATE:
        return _escalate(session, timer, alert, now=now, protocol=protocol, late=late)
    if timer.kind == scheduling.FAILOVER:
        return _failover(session, timer, alert, now=now, protocol=protocol, late=late)
    obligation = session.get(Obligation, timer.obligation_id) if timer.obligation_id else None
    if obligation is None:
        raise LookupError(f"timer {timer.id} ({timer.kind}) names no existing obligation")
    if obligation.state not in OPEN_STATES:
        return _skip(timer, f"{label(obligation.kind)} already {obligation.state}")
    if timer.kind == scheduling.REMINDER:
        later = store.due_obligation_timer(session, obligation_id=obligation.id, after=timer.due_at, now=now)
        if later is not None:
            return _skip(timer, f"superseded by the {later.kind} also due (missed while notify was down)")
        return _remind(session, timer, alert, obligation, now=now, protocol=protocol, late=late)
    if timer.kind == scheduling.OVERDUE:
        return _overdue(session, timer, alert, obligation, now=now, protocol=protocol, late=late)
    raise ValueError(f"unknown timer kind {timer.kind!r}")


def _skip(timer: Timer, why: str) -> Outcome:
    timer.state = "skipped"
    timer.note = why[:500]
    return "skipped"


def _lines(session: Session, alert: Alert) -> list[ObligationLine]:
    return [
        ObligationLine(label(o.kind), o.due_at, o.state) for o in store.obligations_for(session, alert_ids=[alert.id])
    ]


def _escalate(session: Session, timer: Timer, alert: Alert, *, now: datetime, protocol: Protocol, late: str) -> Outcome:
    if timer.round != alert.escalation_round:
        return _skip(timer, "superseded by a newer paging round")
    action = escalation.escalation_action(alert_state=alert.state, snoozed_until=alert.snoozed_until, now=now)
    if action == "skip":
        return _skip(timer, f"alert {alert.state}")
    if action == "defer" and alert.snoozed_until is not None:
        timer.state = "pending"
        timer.fired_at = None
        timer.due_at = alert.snoozed_until
        store.record(
            session,
            alert_id=alert.id,
            actor=SYSTEM,
            action="escalation_deferred",
            detail=f"step {timer.step + 1} held until {when(alert.snoozed_until)} (snoozed by {alert.snoozed_by}: "
            f"{alert.snooze_reason})",
            now=now,
        )
        return "deferred"
    steps = protocol.escalation.steps
    targets = escalation.step_targets(protocol, timer.step)
    waited = duration_text(now - (alert.paged_at or alert.created_at))
    content = timed_mail(
        trial_id=alert.trial_id,
        alert_id=alert.id,
        alert_title=alert.title,
        subject=f"Escalation step {timer.step + 1} of {len(steps)}, not acknowledged",
        heading=f"Nobody has acknowledged this alert for {waited}: escalation step {timer.step + 1} pages you.",
        obligations=_lines(session, alert),
    )
    recipients = escalation.resolve_targets(protocol, targets)
    store.queue_messages(
        session, alert_id=alert.id, messages=messages_to(timer.id, recipients, content), now=now, timer_kind=timer.kind
    )
    alert.escalation_step = max(alert.escalation_step, timer.step)
    session.add(alert)
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="escalated",
        detail=f"step {timer.step + 1}: {', '.join(targets)}{late}",
        now=now,
        step=timer.step,
        late=bool(late),
    )
    scheduling.schedule_next_step(session, alert=alert, protocol=protocol, step=timer.step, paged_at=now, now=now)
    return "fired"


def _remind(
    session: Session,
    timer: Timer,
    alert: Alert,
    obligation: Obligation,
    *,
    now: datetime,
    protocol: Protocol,
    late: str,
) -> Outcome:
    left = duration_text(obligation.due_at - now)
    what = label(obligation.kind)
    content = timed_mail(
        trial_id=alert.trial_id,
        alert_id=alert.id,
        alert_title=alert.title,
        subject=f"Reminder: {what} due {when(obligation.due_at)} ({left} left)",
        heading=f"Reminder: the {what} is due in {left}, at {when(obligation.due_at)}.",
        obligations=_lines(session, alert),
    )
    recipients = escalation.resolve_targets(protocol, reminded_roles(protocol, obligation.kind))
    store.queue_messages(
        session, alert_id=alert.id, messages=messages_to(timer.id, recipients, content), now=now, timer_kind=timer.kind
    )
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="reminder_sent",
        detail=f"{what} due in {left} ({timer.note}){late}",
        now=now,
        obligation_id=obligation.id,
        late=bool(late),
    )
    return "fired"


def _overdue(
    session: Session,
    timer: Timer,
    alert: Alert,
    obligation: Obligation,
    *,
    now: datetime,
    protocol: Protocol,
    late: str,
) -> Outcome:
    """The overdue transition is persisted here; each repeat climbs one tier, until the obligation closes."""
    policy = protocol.escalation
    what = label(obligation.kind)
    if obligation.state == "open":
        obligation.state = "overdue"
        obligation.overdue_at = now
        session.add(obligation)
    tier = escalation.overdue_tier(policy, paged_step=alert.escalation_step)
    targets = [*reminded_roles(protocol, obligation.kind), *escalation.step_targets(protocol, tier)]
    past = duration_text(now - obligation.due_at)
    content = timed_mail(
        trial_id=alert.trial_id,
        alert_id=alert.id,
        alert_title=alert.title,
        subject=f"OVERDUE: {what} was due {when(obligation.due_at)}",
        heading=f"The {what} is overdue by {past} (due {when(obligation.due_at)}); escalated to tier {tier + 1}.",
        obligations=_lines(session, alert),
        footer="Only recording the filed report stops these pages; acknowledging or snoozing the alert does not.",
    )
    recipients = escalation.resolve_targets(protocol, targets)
    store.queue_messages(
        session, alert_id=alert.id, messages=messages_to(timer.id, recipients, content), now=now, timer_kind=timer.kind
    )
    alert.escalation_step = max(alert.escalation_step, tier)
    session.add(alert)
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="overdue" if timer.step == 0 else "overdue_repeat",
        detail=f"{what} overdue by {past}; paged tier {tier + 1}: {', '.join(sorted(set(targets)))}{late}",
        now=now,
        obligation_id=obligation.id,
        repeat=timer.step,
        late=bool(late),
    )
    number, at = escalation.next_overdue_repeat(
        deadline=obligation.due_at, repeat_minutes=policy.overdue_repeat_minutes, fired=timer.step, now=now
    )
    store.schedule_timer(
        session,
        timer_id=scheduling.overdue_timer_id(obligation.id, number),
        kind=scheduling.OVERDUE,
        alert_id=alert.id,
        obligation_id=obligation.id,
        step=number,
        due_at=at,
        now=now,
    )
    return "fired"


def _failover(session: Session, timer: Timer, alert: Alert, *, now: datetime, protocol: Protocol, late: str) -> Outcome:
    failed = session.get(Delivery, timer.note)
    failed_to = failed.recipient if failed is not None else "unknown"
    resolved = alert.state == "resolved"
    found = (
        None
        if resolved
        else escalation.failover_recipients(protocol, paged_step=alert.escalation_step, failed_to=failed_to)
    )
    if found is None:
        action, why = (
            ("failover_not_needed", "after every obligation was done; nobody paged")
            if resolved
            else ("failover_exhausted", "and no further tier is left to page")
        )
        store.record(
            session,
            alert_id=alert.id,
            actor=SYSTEM,
            action=action,
            detail=f"delivery to {failed_to} failed {why}{late}",
            now=now,
            delivery_id=timer.note,
        )
        return "fired"
    tier, recipients = found
    content = timed_mail(
        trial_id=alert.trial_id,
        alert_id=alert.id,
        alert_title=alert.title,
        subject="Could not reach the previous contact",
        heading=f"A message to {failed_to} could not be delivered "
        f"({failed.last_error if failed is not None else 'unknown error'}); you are the next tier.",
        obligations=_lines(session, alert),
    )
    store.queue_messages(
        session, alert_id=alert.id, messages=messages_to(timer.id, recipients, content), now=now, timer_kind=timer.kind
    )
    alert.escalation_step = max(alert.escalation_step, tier)
    session.add(alert)
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="failover",
        detail=f"delivery to {failed_to} failed; paged tier {tier + 1}: "
        f"{', '.join(r.address for r in recipients)}{late}",
        now=now,
        delivery_id=timer.note,
    )
    return "fired"
