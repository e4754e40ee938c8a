"""Queries on notify's tables and its slice of the audit trail. Keyword-only; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from services.notify import urgency
from services.notify.mail_content import console_link, with_console_link
from services.notify.models import Alert, Delivery, Obligation, Timer
from services.notify.obligations import OPEN_STATES
from services.notify.sae_alerts import AlertPlan, MessagePlan
from shared.audit import AuditEntry, append_audit, lock_audit_chain

SERVICE = "notify"


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    detail: str
    facts: dict[str, Any]


def lock_audit(session: Session) -> None:
    """Take the audit-chain lock first thing in every notify write transaction (see lock_audit_chain)."""
    lock_audit_chain(session, service=SERVICE)


def record(
    session: Session, *, alert_id: str, actor: str, action: str, detail: str, now: datetime, **facts: Any
) -> None:
    """One fact about an alert, written once: to the audit chain, which is also the alert's history."""
    lock_audit(session)
    append_audit(
        session,
        service=SERVICE,
        actor=actor,
        action=action,
        entity=f"alert:{alert_id}",
        detail={"text": detail, **facts},
        now=now,
    )


def history_for(session: Session, *, alert_id: str) -> list[HistoryEntry]:
    rows = session.exec(
        select(AuditEntry)
        .where(AuditEntry.service == SERVICE, AuditEntry.entity == f"alert:{alert_id}")
        .order_by(col(AuditEntry.seq))
    ).all()
    return [
        HistoryEntry(
            seq=row.seq or 0,
            at=row.at,
            actor=row.actor,
            action=row.action,
            detail=str(row.detail.get("text", "")),
            facts={k: v for k, v in row.detail.items() if k != "text"},
        )
        for row in rows
    ]


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
        paged_at=now,
    )
    session.add(alert)
    session.flush()
    if plan.obligation is not None:
        add_obligation(session, plan=plan, trial_id=trial_id, subject_id=subject_id)
    return alert


def add_obligation(session: Session, *, plan: AlertPlan, trial_id: str, subject_id: str) -> Obligation | None:
    """The plan's obligation, unless that very obligation exists already (a replayed signal)."""
    o = plan.obligation
    if o is None or session.get(Obligation, o.id) is not None:
        return None
    obligation = Obligation(
        id=o.id,
        alert_id=plan.alert_id,
        kind=o.kind,
        trial_id=trial_id,
        subject_id=subject_id,
        description=o.description,
        clock_started_at=o.clock_started_at,
        clock_basis=o.clock_basis,
        due_at=o.due_at,
    )
    session.add(obligation)
    session.flush()
    return obligation


def queue_messages(
    session: Session,
    *,
    alert_id: str,
    messages: Sequence[MessagePlan],
    now: datetime,
    timer_kind: str | None = None,
    live: bool = False,
) -> int:
    """Queue each message once (ids are deterministic), classed by urgency (see urgency.py; `live`: about a finding
    a site has just entered, not a backfill's)."""
    queued = 0
    level: int | None = None
    ids = [message.delivery_id for message in messages]
    existing = set(session.exec(select(Delivery.id).where(col(Delivery.id).in_(ids))).all()) if ids else set()
    for message in messages:
        if message.delivery_id in existing:
            continue
        existing.add(message.delivery_id)
        if level is None:
            level = message_urgency(session, alert_id=alert_id, timer_kind=timer_kind, live=live)
        session.add(
            Delivery(
                id=message.delivery_id,
                alert_id=alert_id,
                channel=message.channel,
                recipient=message.recipient,
                subject=message.content.subject[:500],
                body_text=message.content.text,
                body_html=message.content.html,
                urgency=level,
                next_attempt_at=now,
                created_at=now,
            )
        )
        queued += 1
    return queued


def link_queued_to_console(session: Session, *, console_url: str | None, now: datetime) -> int:
    """Adds the console link of its alert to every message queued at `now` in this transaction (and to any
    other message of that instant still pending without one). A no-op without a console URL."""
    if not console_url:
        return 0
    session.flush()
    linked = 0
    pending = select(Delivery).where(Delivery.created_at == now, Delivery.status == "pending")
    for delivery in session.exec(pending):
        link = console_link(console_url, delivery.alert_id)
        text, html = with_console_link(text=delivery.body_text, html=delivery.body_html, link=link)
        if text != delivery.body_text:
            delivery.body_text, delivery.body_html = text, html
            session.add(delivery)
            linked += 1
    return linked


def message_urgency(session: Session, *, alert_id: str, timer_kind: str | None, live: bool = False) -> int:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise LookupError(f"messages queued for alert {alert_id}, which does not exist")
    return urgency.urgency_of(
        alert_kind=alert.kind,
        has_open_obligation=bool(open_obligations(session, alert_id=alert_id)),
        timer_kind=timer_kind,
        live=live,
    )


def list_alerts(
    session: Session,
    *,
    trial_id: str | None,
    subject_id: str | None,
    state: str | None,
    due_before: datetime | None = None,
    limit: int,
) -> Sequence[Alert]:
    query = select(Alert)
    if trial_id:
        query = query.where(Alert.trial_id == trial_id)
    if subject_id:
        query = query.where(Alert.subject_id == subject_id)
    if state:
        query = query.where(Alert.state == state)
    if due_before:
        due = select(Obligation.alert_id).where(
            col(Obligation.state).in_(OPEN_STATES), col(Obligation.due_at) < due_before
        )
        query = query.where(col(Alert.id).in_(due))
    return session.exec(query.order_by(col(Alert.created_at).desc()).limit(limit)).all()


def obligations_for(session: Session, *, alert_ids: Sequence[str]) -> Sequence[Obligation]:
    if not alert_ids:
        return []
    return session.exec(
        select(Obligation).where(col(Obligation.alert_id).in_(alert_ids)).order_by(col(Obligation.due_at))
    ).all()


def open_obligations(session: Session, *, alert_id: str) -> Sequence[Obligation]:
    return session.exec(
        select(Obligation).where(Obligation.alert_id == alert_id, col(Obligation.state).in_(OPEN_STATES))
    ).all()


def deliveries_for(session: Session, *, alert_id: str) -> Sequence[Delivery]:
    return session.exec(select(Delivery).where(Delivery.alert_id == alert_id).order_by(col(Delivery.created_at))).all()


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
    """`overdue` means past its deadline and not done, whether or not the overdue timer has run yet."""
    query = select(Obligation)
    if trial_id:
        query = query.where(Obligation.trial_id == trial_id)
    if subject_id:
        query = query.where(Obligation.subject_id == subject_id)
    if state == "overdue":
        query = query.where(col(Obligation.state).in_(OPEN_STATES), col(Obligation.due_at) < now)
    elif state == "open":
        query = query.where(col(Obligation.state).in_(OPEN_STATES), col(Obligation.due_at) >= now)
    elif state:
        query = query.where(Obligation.state == state)
    if due_before:
        query = query.where(col(Obligation.due_at) < due_before)
    return session.exec(query.order_by(col(Obligation.due_at)).limit(limit)).all()


def _lease_free(now: datetime) -> Any:
    return or_(col(Delivery.leased_until).is_(None), col(Delivery.leased_until) < now)


def due_delivery_ids(
    session: Session, *, now: datetime, limit: int, digest_after: datetime, most_urgency: int = urgency.DIGEST
) -> list[str]:
    """Due deliveries, most urgent first; a digest notice is due once it has waited for its window
    (created at or before `digest_after`), so the notices that follow it ride in the same mail.
    `most_urgency`: none less urgent than this (urgency.PAGE: the pages only)."""
    query = (
        select(Delivery.id)
        .where(
            Delivery.status == "pending",
            col(Delivery.urgency) <= most_urgency,
            col(Delivery.next_attempt_at) <= now,
            _lease_free(now),
            or_(col(Delivery.urgency) < urgency.DIGEST, col(Delivery.created_at) <= digest_after),
        )
        .order_by(col(Delivery.urgency), col(Delivery.next_attempt_at), col(Delivery.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(query).all())


def digest_companion_ids(session: Session, *, channel: str, recipient: str, now: datetime, limit: int) -> list[str]:
    """Every other due digest notice for the same recipient, however recent: one mail carries them all."""
    query = (
        select(Delivery.id)
        .where(
            Delivery.status == "pending",
            Delivery.urgency == urgency.DIGEST,
            Delivery.channel == channel,
            Delivery.recipient == recipient,
            col(Delivery.next_attempt_at) <= now,
            _lease_free(now),
        )
        .order_by(col(Delivery.created_at), col(Delivery.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(query).all())


def lease_delivery(session: Session, *, delivery_id: str, now: datetime, until: datetime, holder: str = "") -> bool:
    """Compare-and-set lease: of two replicas racing for one delivery, exactly one wins."""
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.id) == delivery_id, col(Delivery.status) == "pending", _lease_free(now))
        .values(leased_until=until, leased_by=holder or None)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew_delivery_leases(session: Session, *, delivery_ids: Sequence[str], holder: str, until: datetime) -> int:
    """The heartbeat: extend the leases this holder still has on deliveries it is sending."""
    if not delivery_ids:
        return 0
    result = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id).in_(list(delivery_ids)),
            col(Delivery.status) == "pending",
            col(Delivery.leased_by) == holder,
        )
        .values(leased_until=until)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- timers ---------------------------------------------------------------------------------------


_TIMERS = Timer.__table__  # type: ignore[attr-defined]
_SCHEDULE: dict[str, Insert] = {
    # Built once per dialect: scheduling is one INSERT that does nothing when the timer exists, not a lookup,
    # an ORM add and a flush.
    "sqlite": sqlite.insert(_TIMERS).on_conflict_do_nothing(index_elements=["id"]),
    "postgresql": postgresql.insert(_TIMERS).on_conflict_do_nothing(index_elements=["id"]),
}


def schedule_timer(
    session: Session,
    *,
    timer_id: str,
    kind: str,
    alert_id: str,
    due_at: datetime,
    now: datetime,
    obligation_id: str | None = None,
    step: int = 0,
    round_: int = 0,
    note: str = "",
) -> bool:
    """Insert the timer unless it exists (ids are deterministic: scheduling twice is one timer)."""
    if session.new:
        session.flush()  # the alert or obligation it points at, if just added, goes first
    connection = session.connection()
    result = connection.execute(
        _SCHEDULE[connection.dialect.name],
        {
            "id": timer_id,
            "kind": kind,
            "alert_id": alert_id,
            "obligation_id": obligation_id,
            "step": step,
            "round": round_,
            "note": note[:500],
            "due_at": due_at,
            "state": "pending",
            "leased_until": None,
            "fired_at": None,
            "created_at": now,
        },
    )
    return bool(result.rowcount == 1)


def cancel_timers(
    session: Session,
    *,
    reason: str,
    alert_id: str | None = None,
    obligation_id: str | None = None,
    kinds: Sequence[str] = (),
) -> int:
    """Pending timers of an alert (or of one obligation) will not fire; fired ones stay as they were."""
    query = update(Timer).where(col(Timer.state) == "pending")
    if alert_id is not None:
        query = query.where(col(Timer.alert_id) == alert_id)
    if obligation_id is not None:
        query = query.where(col(Timer.obligation_id) == obligation_id)
    if kinds:
        query = query.where(col(Timer.kind).in_(kinds))
    result = session.execute(query.values(state="cancelled", note=reason[:500], leased_until=None))
    return int(result.rowcount)  # type: ignore[attr-defined]


def revive_timers(session: Session, *, obligation_id: str, kinds: Sequence[str]) -> int:
    """An obligation's cancelled timers pending again (it was reopened); the caller re-dates them."""
    query = update(Timer).where(
        col(Timer.state) == "cancelled", col(Timer.obligation_id) == obligation_id, col(Timer.kind).in_(kinds)
    )
    result = session.execute(query.values(state="pending", leased_until=None))
    return int(result.rowcount)  # type: ignore[attr-defined]


def pending_timers(session: Session, *, alert_id: str, kinds: Sequence[str] = ()) -> Sequence[Timer]:
    query = select(Timer).where(Timer.alert_id == alert_id, Timer.state == "pending")
    if kinds:
        query = query.where(col(Timer.kind).in_(kinds))
    return session.exec(query.order_by(col(Timer.due_at))).all()


def due_obligation_timer(session: Session, *, obligation_id: str, after: datetime, now: datetime) -> Timer | None:
    """A later reminder or overdue page of the obligation that is also due now (several were missed)."""
    return session.exec(
        select(Timer)
        .where(
            Timer.obligation_id == obligation_id,
            Timer.state == "pending",
            col(Timer.due_at) > after,
            col(Timer.due_at) <= now,
        )
        .limit(1)
    ).first()


def due_timer_ids(session: Session, *, now: datetime, limit: int) -> list[str]:
    query = (
        select(Timer.id)
        .where(
            Timer.state == "pending",
            col(Timer.due_at) <= now,
            or_(col(Timer.leased_until).is_(None), col(Timer.leased_until) < now),
        )
        .order_by(col(Timer.due_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(query).all())


def lease_timer(session: Session, *, timer_id: str, now: datetime, until: datetime) -> bool:
    """Compare-and-set lease, as for deliveries: one replica works on a due timer at a time."""
    result = session.execute(
        update(Timer)
        .where(
            col(Timer.id) == timer_id,
            col(Timer.state) == "pending",
            or_(col(Timer.leased_until).is_(None), col(Timer.leased_until) < now),
        )
        .values(leased_until=until)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_timer_fired(session: Session, *, timer_id: str, now: datetime) -> bool:
    """Compare-and-set pending -> fired in the transaction that does the timer's work: fires exactly once."""
    result = session.execute(
        update(Timer)
        .where(col(Timer.id) == timer_id, col(Timer.state) == "pending")
        .values(state="fired", fired_at=now, leased_until=None)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
