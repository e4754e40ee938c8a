"""Notify's service layer for what people (and the decisions safety reports) do to alerts and obligations:
acknowledge, comment, snooze, complete, cancel. Each changes state, adjusts timers and writes the audit
trail in the caller's transaction; none commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from services.notify import scheduling, store
from services.notify.mail_content import when
from services.notify.models import Alert, Obligation
from services.notify.obligations import ObligationConflict, check_can_close, is_late, label
from shared.clock import utc

MAX_SNOOZE = timedelta(days=7)
RESOLVED = " (no obligation left open: alert resolved, paging stopped)"


class ActionRefused(ValueError):
    """The action does not fit the alert's state (e.g. a snooze expiring in the past)."""


def acknowledge(session: Session, *, alert: Alert, actor: str, comment: str | None, now: datetime) -> timedelta | None:
    """Stops paging (pending escalation steps); reminders and overdue pages of open obligations go on.

    Returns the time to acknowledge, or None when the alert was already acknowledged or resolved.
    """
    suffix = f": {comment}" if comment else ""
    if alert.state != "open":
        store.record(
            session, alert_id=alert.id, actor=actor, action="acknowledged", detail=f"acknowledged{suffix}", now=now
        )
        return None
    alert.state = "acknowledged"
    alert.acknowledged_at = now
    alert.acknowledged_by = actor
    alert.updated_at = now
    session.add(alert)
    stopped = scheduling.stop_escalation(session, alert_id=alert.id, reason=f"acknowledged by {actor}")
    store.record(
        session,
        alert_id=alert.id,
        actor=actor,
        action="acknowledged",
        detail=f"acknowledged{suffix}",
        now=now,
        escalation_steps_cancelled=stopped,
    )
    return now - (alert.paged_at or alert.created_at)


def comment(session: Session, *, alert: Alert, actor: str, text: str, now: datetime) -> None:
    store.record(session, alert_id=alert.id, actor=actor, action="commented", detail=text, now=now)


def snooze(session: Session, *, alert: Alert, actor: str, reason: str, until: datetime, now: datetime) -> None:
    """Postpones escalation pages until `until`. Never touches an obligation's reminders or overdue pages."""
    until = utc(until)
    if until <= now:
        raise ActionRefused(f"the snooze must expire in the future (now is {when(now)})")
    if until - now > MAX_SNOOZE:
        raise ActionRefused(f"a snooze lasts at most {MAX_SNOOZE.days} days")
    held_until = alert.snoozed_until
    if held_until is not None and until < held_until:
        # Escalation steps held by the earlier, longer snooze resume at the new expiry.
        for timer in store.pending_timers(session, alert_id=alert.id, kinds=[scheduling.ESCALATE]):
            if timer.due_at == held_until:
                timer.due_at = until
                session.add(timer)
    alert.snoozed_until = until
    alert.snoozed_by = actor
    alert.snooze_reason = reason
    alert.updated_at = now
    session.add(alert)
    open_ = store.open_obligations(session, alert_id=alert.id)
    note = f"; reminders and overdue pages for {', '.join(label(o.kind) for o in open_)} continue" if open_ else ""
    store.record(
        session,
        alert_id=alert.id,
        actor=actor,
        action="snoozed",
        detail=f"escalation paused until {when(until)}: {reason}{note}",
        now=now,
        until=until.isoformat(),
    )


def complete(
    session: Session,
    *,
    alert: Alert,
    obligation: Obligation,
    actor: str,
    reference: str,
    comment: str | None,
    at: datetime,
    now: datetime,
) -> timedelta:
    """Recording the filed report (or the decision) stops this obligation's clock: its reminders and overdue
    pages. Returns the time from the clock's start to completion."""
    check_can_close(obligation.state, to="completed")
    late = is_late(due_at=obligation.due_at, at=at)
    obligation.state = "completed"
    obligation.completed_at = at
    obligation.completed_by = actor
    obligation.reference = reference
    session.add(obligation)
    scheduling.stop_obligation_clock(session, obligation=obligation, reason=f"completed by {actor}")
    resolved = scheduling.resolve_if_done(session, alert=alert, now=now)
    suffix = f"; {comment}" if comment else ""
    store.record(
        session,
        alert_id=alert.id,
        actor=actor,
        action="report_filed",
        detail=f"{obligation.kind} filed as '{reference}'{' after the deadline' if late else ''}{suffix}"
        f"{RESOLVED if resolved else ''}",
        now=now,
        obligation_id=obligation.id,
        reference=reference,
        late=late,
        alert_resolved=resolved,
    )
    return at - obligation.clock_started_at


def cancel(session: Session, *, alert: Alert, obligation: Obligation, actor: str, reason: str, now: datetime) -> None:
    check_can_close(obligation.state, to="cancelled")
    obligation.state = "cancelled"
    obligation.cancelled_at = now
    obligation.cancelled_by = actor
    obligation.cancel_reason = reason
    session.add(obligation)
    scheduling.stop_obligation_clock(session, obligation=obligation, reason=f"cancelled by {actor}")
    resolved = scheduling.resolve_if_done(session, alert=alert, now=now)
    store.record(
        session,
        alert_id=alert.id,
        actor=actor,
        action="obligation_cancelled",
        detail=f"{label(obligation.kind)} cancelled: {reason}{RESOLVED if resolved else ''}",
        now=now,
        obligation_id=obligation.id,
        alert_resolved=resolved,
    )


__all__ = ["ActionRefused", "ObligationConflict", "acknowledge", "cancel", "comment", "complete", "snooze"]
