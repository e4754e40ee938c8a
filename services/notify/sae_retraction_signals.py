"""Notify's service layer for an SAE the site took back (`sae.withdrawn`) or restored (`sae.detected` again).

The decisions are pure (`sae_retraction`); here they are applied inside the consumer's transaction: the report
obligation cancelled or reopened through the same helpers as any other (`alert_actions.cancel`,
`scheduling.reopen_obligation`), pages not yet handed over withdrawn, one notice to whoever was paged, and every
step in the alert's history with who and why.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, update
from sqlmodel import Session, col

from services.notify import alert_actions, scheduling, store
from services.notify.escalation import initial_targets, resolve_targets
from services.notify.models import Alert, Delivery, Obligation
from services.notify.obligations import SAE_REPORT
from services.notify.sae_alerts import messages_to, report_deadline, sae_thread_key
from services.notify.sae_retraction import (
    RESTORED,
    SYSTEM,
    WITHDRAWN,
    HeldObligation,
    SentMessage,
    cancel_reason,
    paged_recipients,
    plan_withdrawal,
    restore_fate,
    restored_deadline,
    restored_reason,
    retraction_words,
    stands_withdrawn,
    withdrawn_mail,
)
from shared.clock import utc
from shared.events import SaeDetected, SaeUpdated, SaeWithdrawn
from shared.protocol import Protocol


def _held(obligations: list[Obligation]) -> list[HeldObligation]:
    return [HeldObligation(o.id, o.state, o.cancelled_by, o.reference, o.due_at) for o in obligations]


def _sae_reports(session: Session, alert: Alert) -> list[Obligation]:
    return [o for o in store.obligations_for(session, alert_ids=[alert.id]) if o.kind == SAE_REPORT]


def is_withdrawn(session: Session, alert: Alert) -> bool:
    """Whether the alert's SAE stands withdrawn. A withdrawal always leaves the alert resolved (its one obligation
    closed), so an alert that is not resolved needs no look at its history."""
    if alert.state != "resolved":
        return False
    return stands_withdrawn([entry.action for entry in store.history_for(session, alert_id=alert.id)])


def apply_withdrawn(session: Session, signal: SaeWithdrawn, now: datetime, *, protocol: Protocol) -> None:
    data = signal.data
    alert = store.find_alert_by_thread(session, thread_key=sae_thread_key(signal.trialid, data))
    if alert is None:
        return  # never seen as an SAE here (safety withdraws only what it signalled): nothing was paged
    words = retraction_words(data)
    if is_withdrawn(session, alert):
        store.record(session, alert_id=alert.id, actor=SYSTEM, action="follow_up", detail=f"{words}", now=now)
        return
    reports = _sae_reports(session, alert)
    plan = plan_withdrawal(_held(reports))
    for obligation in reports:
        if obligation.id in plan.cancel:
            alert_actions.cancel(
                session, alert=alert, obligation=obligation, actor=SYSTEM, reason=cancel_reason(data), now=now
            )
    paged = paged_recipients(sent_messages(session, alert.id, now))
    unsent = stop_paging(session, alert.id, why=f"SAE withdrawn ({words})", now=now)
    if plan.filed and not paged:  # a filed report's retraction is news for the SAE's people, paged or not
        paged = resolve_targets(protocol, initial_targets(protocol, protocol.sae.notify_roles, escalates=True))
    due = max((o.due_at for o in reports), default=report_deadline(data.awareness_at, protocol.sae.report_within_hours))
    content = withdrawn_mail(signal.trialid, data, filed=plan.filed, due_at=due)
    notices = messages_to(signal.id, paged, content) if plan.changes_anything else ()
    store.queue_messages(session, alert_id=alert.id, messages=notices, now=now)
    alert.updated_at = now
    session.add(alert)
    told = ", ".join(r.address for r in paged) if notices else "nobody (no page had gone out)"
    filed = (
        f"; filed as {', '.join(plan.filed)}: a nullification or follow-up report may be needed" if plan.filed else ""
    )
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action=WITHDRAWN,
        detail=f"SAE withdrawn: {words}{filed}; told {told}"
        + (f"; {unsent} page(s) not yet sent withdrawn" if unsent else ""),
        now=now,
        source_event_id=data.source_event_id,
        ae_version=data.ae_version,
        status=data.status,
        changed_at=data.changed_at.isoformat(),
        obligations_cancelled=list(plan.cancel),
        filed=list(plan.filed),
        unsent_withdrawn=unsent,
    )


def apply_restored(
    session: Session, alert: Alert, signal: SaeDetected | SaeUpdated, now: datetime, *, protocol: Protocol
) -> str | None:
    """The site restored an AE whose SAE was withdrawn here: the report obligation the withdrawal cancelled is open
    again with its original deadline (timers re-armed, overdue at once if past). Returns the reason to page with
    (None: nothing owed again, e.g. an officer's own cancellation stands)."""
    data = signal.data
    due = report_deadline(data.awareness_at, protocol.sae.report_within_hours)
    reopened: list[Obligation] = []
    filed: list[str] = []
    standing: list[str] = []
    for obligation in _sae_reports(session, alert):
        fate = restore_fate(_held([obligation])[0])
        if fate == "reopen":
            due_at = restored_deadline(obligation.due_at, due)
            if due_at < obligation.due_at:
                obligation.clock_started_at = utc(data.awareness_at)
                obligation.clock_basis = data.awareness_basis.value
            obligation.due_at = due_at
            scheduling.reopen_obligation(session, obligation=obligation, protocol=protocol, now=now)
            reopened.append(obligation)
        elif fate == "filed":
            filed.append(obligation.reference or obligation.id)
        elif fate == "officer_closed":
            standing.append(f"cancelled by {obligation.cancelled_by}: {obligation.cancel_reason}")
    due = min((o.due_at for o in reopened), default=due)
    reason = restored_reason(data, due_at=due, now=now, filed=filed) if reopened or filed else None
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action=RESTORED,
        detail=(reason or f"the site restored AE {data.ae_id}")
        + "".join(f"; the SAE report {s} (stands)" for s in standing),
        now=now,
        source_event_id=data.source_event_id,
        ae_version=data.ae_version,
        obligations_reopened=[o.id for o in reopened],
        overdue=any(o.due_at <= now for o in reopened),
    )
    for obligation in reopened:
        store.record(
            session,
            alert_id=alert.id,
            actor=SYSTEM,
            action="obligation_reopened",
            detail=f"SAE report reopened, due {utc(obligation.due_at).isoformat()}: the site restored AE {data.ae_id}",
            now=now,
            obligation_id=obligation.id,
        )
    return reason


def sent_messages(session: Session, alert_id: str, now: datetime) -> list[SentMessage]:
    """The alert's messages as the pure withdrawal rules read them (who may have received a page)."""
    return [
        SentMessage(
            recipient=d.recipient,
            channel="webhook" if d.channel == "webhook" else "email",
            status=d.status,
            attempt_started=d.attempt_started_at is not None,
            leased=d.status == "pending" and d.leased_until is not None and utc(d.leased_until) >= now,
        )
        for d in store.deliveries_for(session, alert_id=alert_id)
    ]


def cancel_reviews(session: Session, alert: Alert, *, kind: str, reason: str, now: datetime) -> list[Obligation]:
    """The alert's open obligations of `kind` cancelled by the system with `reason` (a withdrawn finding's review)."""
    reviews = [o for o in store.open_obligations(session, alert_id=alert.id) if o.kind == kind]
    for obligation in reviews:
        alert_actions.cancel(session, alert=alert, obligation=obligation, actor=SYSTEM, reason=reason[:2000], now=now)
    return reviews


def stop_paging(session: Session, alert_id: str, *, why: str, now: datetime) -> int:
    """A withdrawn alert pages no more: escalation and failover stop, and pages no sender holds are not sent
    (`withdraw_unsent`); returns how many pages were withdrawn."""
    scheduling.stop_escalation(session, alert_id=alert_id, reason=why)
    store.cancel_timers(session, alert_id=alert_id, kinds=[scheduling.FAILOVER], reason=why)
    return withdraw_unsent(session, alert_id, now=now, reason=f"not sent: {why}")


def withdraw_unsent(session: Session, alert_id: str, *, now: datetime, reason: str) -> int:
    """Pages of the alert no sender holds are not sent (one compare-and-set, as a sender's lease is: a page a
    sender leased first goes out, and its recipient hears of the withdrawal)."""
    result = session.execute(
        update(Delivery)
        .where(
            col(Delivery.alert_id) == alert_id,
            col(Delivery.status) == "pending",
            or_(col(Delivery.leased_until).is_(None), col(Delivery.leased_until) < now),
        )
        .values(status="cancelled", last_error=reason[:2000])
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
