"""Queries on notify's tables. Keyword-only; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from services.notify.models import Alert, AlertHistory, Delivery, Obligation
from services.notify.sae_alerts import AlertPlan, MessagePlan


def add_history(session: Session, *, alert_id: str, actor: str, action: str, detail: str, now: datetime) -> None:
    session.add(AlertHistory(alert_id=alert_id, at=now, actor=actor, action=action, detail=detail))


def find_alert_by_thread(session: Session, *, thread_key: str) -> Alert | None:
    return session.exec(select(Alert).where(Alert.thread_key == thread_key)).first()


def create_alert(
    session: Session, *, plan: AlertPlan, kind: str, trial_id: str, site_id: str, subject_id: str, now: datetime
) -> Alert:
    alert = Alert(
        id=plan.alert_id,
        thread_key=plan.thread_key,
        kind=kind,
        trial_id=trial_id,
        site_id=site_id,
        subject_id=subject_id,
        title=plan.title,
        details=plan.details,
        created_at=now,
        updated_at=now,
    )
    session.add(alert)
    session.flush()
    o = plan.obligation
    if o is None:
        return alert
    session.add(
        Obligation(
            id=o.id,
            alert_id=alert.id,
            kind=o.kind,
            trial_id=trial_id,
            subject_id=subject_id,
            description=o.description,
            clock_started_at=o.clock_started_at,
            clock_basis=o.clock_basis,
            due_at=o.due_at,
        )
    )
    return alert


def queue_messages(session: Session, *, alert_id: str, messages: Sequence[MessagePlan], now: datetime) -> int:
    queued = 0
    for message in messages:
        if session.get(Delivery, message.delivery_id) is not None:
            continue
        session.add(
            Delivery(
                id=message.delivery_id,
                alert_id=alert_id,
                channel="email",
                recipient=message.recipient,
                subject=message.content.subject,
                body_text=message.content.text,
                body_html=message.content.html,
                next_attempt_at=now,
                created_at=now,
            )
        )
        queued += 1
    return queued


def list_alerts(
    session: Session, *, trial_id: str | None, subject_id: str | None, state: str | None, limit: int
) -> Sequence[Alert]:
    query = select(Alert)
    if trial_id:
        query = query.where(Alert.trial_id == trial_id)
    if subject_id:
        query = query.where(Alert.subject_id == subject_id)
    if state:
        query = query.where(Alert.state == state)
    return session.exec(query.order_by(col(Alert.created_at).desc()).limit(limit)).all()


def obligations_for(session: Session, *, alert_ids: Sequence[str]) -> Sequence[Obligation]:
    if not alert_ids:
        return []
    return session.exec(select(Obligation).where(col(Obligation.alert_id).in_(alert_ids))).all()


def deliveries_for(session: Session, *, alert_id: str) -> Sequence[Delivery]:
    return session.exec(select(Delivery).where(Delivery.alert_id == alert_id).order_by(col(Delivery.created_at))).all()


def history_for(session: Session, *, alert_id: str) -> Sequence[AlertHistory]:
    return session.exec(
        select(AlertHistory).where(AlertHistory.alert_id == alert_id).order_by(col(AlertHistory.seq))
    ).all()


def list_obligations(
    session: Session,
    *,
    trial_id: str | None,
    subject_id: str | None,
    state: str | None,
    due_before: datetime | None,
    now: datetime,
    limit: int,
) -> Sequence[Obligation]:
    query = select(Obligation)
    if trial_id:
        query = query.where(Obligation.trial_id == trial_id)
    if subject_id:
        query = query.where(Obligation.subject_id == subject_id)
    if state == "overdue":
        query = query.where(Obligation.state == "open", col(Obligation.due_at) < now)
    elif state == "open":
        query = query.where(Obligation.state == "open", col(Obligation.due_at) >= now)
    elif state:
        query = query.where(Obligation.state == state)
    if due_before:
        query = query.where(col(Obligation.due_at) < due_before)
    return session.exec(query.order_by(col(Obligation.due_at)).limit(limit)).all()


def due_delivery_ids(session: Session, *, now: datetime, limit: int) -> list[str]:
    query = (
        select(Delivery.id)
        .where(
            Delivery.status == "pending",
            col(Delivery.next_attempt_at) <= now,
            or_(col(Delivery.leased_until).is_(None), col(Delivery.leased_until) < now),
        )
        .order_by(col(Delivery.next_attempt_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(query).all())


def lease_delivery(session: Session, *, delivery_id: str, now: datetime, until: datetime) -> bool:
    """Compare-and-set lease: of two replicas racing for one delivery, exactly one wins."""
    result = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == delivery_id,
            col(Delivery.status) == "pending",
            or_(col(Delivery.leased_until).is_(None), col(Delivery.leased_until) < now),
        )
        .values(leased_until=until)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
