"""Notify's service layer for SUSAR signals: open, move, add and cancel the per-recipient report obligations.

Every obligation gets its reminders and overdue pages (scheduling.schedule_obligation); the alert pages the
protocol's expedited_reporting.notify_roles through the escalation steps until acknowledged, like an SAE.
A recipient's report is found by recipient and kind, not by the day 0 its id was made from: day 0 can move
earlier (`clock_earlier`) after the obligation was opened.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlmodel import Session

from services.notify import alert_actions, scheduling, store
from services.notify.escalation import initial_targets, resolve_targets
from services.notify.models import Alert, Obligation
from services.notify.sae_alerts import AlertPlan, ObligationPlan, messages_to
from services.notify.sae_retraction import paged_recipients
from services.notify.sae_retraction_signals import sent_messages, withdraw_unsent
from services.notify.susar_alerts import (
    LABELS,
    SUSAR_COMPLETION,
    SUSAR_FOLLOW_UP,
    SUSAR_KIND,
    SUSAR_OBLIGATIONS,
    SUSAR_REPORT,
    ReportState,
    SusarSignal,
    initial_obligations,
    plan_earlier_clock,
    plan_follow_ups,
    plan_susar_alert,
    plan_upgrade,
    recipient_of,
    report_due,
    rules_of,
    susar_thread_key,
    susar_withdrawn_mail,
)
from shared.clock import utc
from shared.events import SusarDetected, SusarUpdated, SusarWithdrawn
from shared.protocol import Protocol

SYSTEM = "system"


def apply_susar(session: Session, signal: SusarSignal, now: datetime, *, protocol: Protocol) -> None:
    if protocol.expedited_reporting is None:
        return  # this protocol names no expedited reporting: safety does not signal SUSARs for it either
    if isinstance(signal, SusarDetected):
        _detected(session, signal, now, protocol)
    elif isinstance(signal, SusarWithdrawn):
        _withdrawn(session, signal, now, protocol)
    elif signal.data.change == "upgraded":
        _upgraded(session, signal, now, protocol)
    elif signal.data.change == "clock_earlier":
        _clock_earlier(session, signal, now, protocol)
    else:
        _follow_up(session, signal, now, protocol)


def _alert(session: Session, signal: SusarSignal, plan: AlertPlan, now: datetime, detail: str) -> tuple[Alert, bool]:
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is not None:
        return alert, False
    data = signal.data
    alert = store.create_alert(
        session,
        plan=plan,
        kind=SUSAR_KIND,
        trial_id=signal.trialid,
        site_id=data.site_id,
        subject_id=data.subject_id,
        now=now,
    )
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="opened", detail=detail, now=now)
    return alert, True


def _page(session: Session, alert: Alert, plan: AlertPlan, *, now: datetime, protocol: Protocol) -> None:
    """News with a clock: page from step 0 (an earlier acknowledgement covered earlier news)."""
    alert.state = "open"
    alert.acknowledged_at = None
    alert.acknowledged_by = None
    alert.snoozed_until = None
    alert.title = plan.title
    alert.details = plan.details
    alert.updated_at = now
    session.add(alert)
    store.queue_messages(session, alert_id=alert.id, messages=plan.messages, now=now)
    scheduling.start_escalation(session, alert=alert, protocol=protocol, now=now)


def _add(
    session: Session, alert: Alert, plan: AlertPlan, obligations: list[ObligationPlan], *, now: datetime, p: Protocol
) -> list[Obligation]:
    added = []
    for o in obligations:
        row = store.add_obligation(
            session, plan=replace(plan, obligation=o), trial_id=alert.trial_id, subject_id=alert.subject_id
        )
        if row is not None:
            scheduling.schedule_obligation(session, obligation=row, protocol=p, now=now)
            added.append(row)
    return added


def _detected(session: Session, signal: SusarDetected, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    known = store.find_alert_by_thread(session, thread_key=susar_thread_key(signal.trialid, data))
    held = store.obligations_for(session, alert_ids=[known.id]) if known is not None else []
    filed = frozenset(recipient_of(o.description) for o in held if o.kind == SUSAR_REPORT and o.state == "completed")
    obligations = initial_obligations(signal.trialid, data, rules_of(protocol), filed=filed)
    kind = "fatal or life-threatening SUSAR" if data.fatal_or_life_threatening else "SUSAR"
    heading = f"New {kind}: expedited reports due"
    if any(o.kind == SUSAR_FOLLOW_UP for o in obligations):
        heading = f"{kind[0].upper()}{kind[1:]} again, already reported: follow-up reports due"
    plan = plan_susar_alert(signal, protocol, heading=heading, obligations=obligations)
    alert, _new = _alert(session, signal, plan, now, f"SUSAR detected: {data.reason}; day 0 {data.clock_basis}")
    added = _add(session, alert, plan, obligations, now=now, p=protocol)
    reopened = _reopen(session, alert, obligations, now=now, p=protocol, reason=data.reason)
    if not added and not reopened:
        return  # a replayed signal: these obligations exist already
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="susar_detected",
        detail=f"day 0 {utc(data.clock_start).isoformat()} ({data.clock_basis}); "
        + "; ".join(f"{o.kind} due {utc(o.due_at).isoformat()}" for o in [*added, *reopened]),
        now=now,
        source_event_id=data.source_event_id,
    )
    _page(session, alert, plan, now=now, protocol=protocol)


def _reopen(
    session: Session, alert: Alert, obligations: list[ObligationPlan], *, now: datetime, p: Protocol, reason: str
) -> list[Obligation]:
    """Re-detected with the day 0 it had before a withdrawal (a late version showed the case never stopped
    qualifying): the reports the withdrawal cancelled are owed again, re-dated, overdue at once if past. An
    officer's own cancellation stands."""
    reopened = []
    for o in obligations:
        row = session.get(Obligation, o.id)
        if row is None or row.state != "cancelled" or row.cancelled_by != SYSTEM:
            continue
        row.description, row.due_at = o.description, o.due_at
        row.clock_started_at, row.clock_basis = o.clock_started_at, o.clock_basis
        scheduling.reopen_obligation(session, obligation=row, protocol=p, now=now)
        store.record(
            session,
            alert_id=alert.id,
            actor=SYSTEM,
            action="obligation_reopened",
            detail=f"{o.description} reopened, due {utc(o.due_at).isoformat()}: a SUSAR again ({reason})"[:2000],
            now=now,
            obligation_id=row.id,
        )
        reopened.append(row)
    return reopened


def _reports(
    session: Session, signal: SusarSignal, protocol: Protocol, alert: Alert, *, kind: str = SUSAR_REPORT
) -> list[ReportState]:
    """Each recipient's initial report (or completion) for the case's current clock, as notify holds it: of that
    kind, not cancelled (a withdrawal's), the latest clock's."""
    rules = rules_of(protocol)
    held = [
        o for o in store.obligations_for(session, alert_ids=[alert.id]) if o.kind == kind and o.state != "cancelled"
    ]
    latest: dict[str, Obligation] = {}
    for o in sorted(held, key=lambda o: (o.clock_started_at, o.id)):
        latest[recipient_of(o.description)] = o
    return [
        ReportState(r, found.id, found.state, found.due_at)
        for r in rules.recipients
        if (found := latest.get(r.id)) is not None
    ]


def _move_earlier(
    session: Session,
    obligation_id: str,
    *,
    due_at: datetime,
    started_at: datetime | None,
    protocol: Protocol,
    now: datetime,
) -> Obligation | None:
    """An obligation's deadline (and clock start, when given) moved earlier, its timers with it; None if gone."""
    row = session.get(Obligation, obligation_id)
    if row is None:
        return None
    scheduling.move_deadline_earlier(
        session,
        obligation=row,
        protocol=protocol,
        started_at=started_at or row.clock_started_at,
        basis=row.clock_basis,
        due_at=due_at,
        now=now,
    )
    return row


def _upgraded(session: Session, signal: SusarUpdated, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    rules = rules_of(protocol)
    provisional = plan_susar_alert(signal, protocol, heading="SUSAR now fatal or life-threatening", obligations=[])
    alert, _new = _alert(session, signal, provisional, now, f"SUSAR upgraded before notify saw it: {data.reason}")
    upgrade = plan_upgrade(signal.trialid, data, rules, _reports(session, signal, protocol, alert))
    for obligation_id, due_at in upgrade.move:
        _move_earlier(session, obligation_id, due_at=due_at, started_at=None, protocol=protocol, now=now)
    plan = plan_susar_alert(
        signal, protocol, heading="SUSAR now fatal or life-threatening: 7-day clock", obligations=list(upgrade.add)
    )
    added = _add(session, alert, plan, list(upgrade.add), now=now, p=protocol)
    if not upgrade.move and not added:
        return  # replayed
    moved = "; ".join(f"report {oid[:8]} now due {utc(at).isoformat()}" for oid, at in upgrade.move)
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="susar_upgraded",
        detail=f"fatal or life-threatening known {utc(data.upgraded_at or data.changed_at).isoformat()}; "
        + "; ".join([*([moved] if moved else []), *(f"{o.kind} due {utc(o.due_at).isoformat()}" for o in added)]),
        now=now,
        source_event_id=data.source_event_id,
    )
    _page(session, alert, plan, now=now, protocol=protocol)


def _follow_up(session: Session, signal: SusarUpdated, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    provisional = plan_susar_alert(signal, protocol, heading="SUSAR follow-up information", obligations=[])
    alert, _new = _alert(session, signal, provisional, now, f"SUSAR follow-up before notify saw it: {data.reason}")
    pending = {
        recipient_of(o.description)
        for o in store.open_obligations(session, alert_id=alert.id)
        if o.kind == SUSAR_FOLLOW_UP
    }
    follow_ups = plan_follow_ups(
        signal.trialid, data, rules_of(protocol), _reports(session, signal, protocol, alert), pending=pending
    )
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="follow_up",
        detail=f"AE version {data.ae_version} (report version {data.report_version}): {data.reason}",
        now=now,
        source_event_id=data.source_event_id,
    )
    alert.details = data.model_dump(mode="json")
    alert.updated_at = now
    session.add(alert)
    if not follow_ups:
        return
    plan = plan_susar_alert(signal, protocol, heading="SUSAR follow-up report due", obligations=follow_ups)
    if _add(session, alert, plan, follow_ups, now=now, p=protocol):
        _page(session, alert, plan, now=now, protocol=protocol)


def _clock_earlier(session: Session, signal: SusarUpdated, now: datetime, protocol: Protocol) -> None:
    """Knowledge processed late makes day 0 (or the 7-day start) earlier: deadlines move earlier, none later.
    Pages only when a deadline moved or an obligation was added, saying OVERDUE when one is already past."""
    data = signal.data
    rules = rules_of(protocol)
    provisional = plan_susar_alert(signal, protocol, heading="SUSAR day 0 earlier", obligations=[])
    alert, _new = _alert(
        session, signal, provisional, now, f"SUSAR with an earlier day 0 before notify saw it: {data.reason}"
    )
    plan = plan_earlier_clock(
        signal.trialid,
        data,
        rules,
        _reports(session, signal, protocol, alert),
        _reports(session, signal, protocol, alert, kind=SUSAR_COMPLETION),
    )
    moved: list[ObligationPlan] = []
    for obligation_id, due_at, started_at in plan.move:
        row = _move_earlier(session, obligation_id, due_at=due_at, started_at=started_at, protocol=protocol, now=now)
        if row is not None:
            moved.append(ObligationPlan(row.id, row.kind, row.description, started_at, row.clock_basis, due_at))
    restarted = 0
    for obligation_id, started_at in plan.restart:
        row = session.get(Obligation, obligation_id)
        if row is not None and started_at < row.clock_started_at:
            row.clock_started_at = started_at
            session.add(row)
            restarted += 1
    added = _add(session, alert, provisional, list(plan.add), now=now, p=protocol)
    alert.details = data.model_dump(mode="json")
    alert.updated_at = now
    session.add(alert)
    late = _filed_late(session, alert, due=report_due(data, rules), clock_start=data.clock_start)
    if not moved and not added and not restarted and not late:
        return  # replayed, or nothing notify held changes
    changed = [
        *moved,
        *(ObligationPlan(o.id, o.kind, o.description, o.clock_started_at, o.clock_basis, o.due_at) for o in added),
    ]
    overdue = [o for o in changed if o.due_at <= now]
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="susar_clock_earlier",
        detail=f"day 0 {utc(data.clock_start).isoformat()} ({data.clock_basis}); "
        + "; ".join(
            [
                f"{o.kind} {o.id[:8]} due {utc(o.due_at).isoformat()}" + (" (OVERDUE)" if o in overdue else "")
                for o in changed
            ]
            + late
            or ["deadlines unchanged"]
        ),
        now=now,
        source_event_id=data.source_event_id,
    )
    if not changed:
        return  # day 0 restated; every deadline already was what the earlier knowledge gives: nothing to page
    heading = "SUSAR day 0 earlier: report OVERDUE" if overdue else "SUSAR day 0 earlier: reports due earlier"
    _page(
        session,
        alert,
        plan_susar_alert(signal, protocol, heading=heading, obligations=changed),
        now=now,
        protocol=protocol,
    )


def _filed_late(session: Session, alert: Alert, *, due: datetime, clock_start: datetime) -> list[str]:
    """Initial reports filed after the deadline the earlier day 0 gives: late in fact, though on time by the
    deadline notify held then. Said in the alert's history for the sponsor's compliance file; the filed reports'
    first-received date (E2B C.1.4) is now wrong, a correction the officer makes."""
    return [
        f"{o.description.split(':')[0]} filed {utc(o.completed_at).isoformat()}, "
        f"{(utc(o.completed_at) - due).days} day(s) late: due {utc(due).isoformat()} from day 0 "
        f"{utc(clock_start).isoformat()} (its first-received date needs correcting)"
        for o in store.obligations_for(session, alert_ids=[alert.id])
        if o.kind == SUSAR_REPORT and o.state == "completed" and o.completed_at is not None and o.completed_at > due
    ]


CASE_MARKS = ("susar_detected", "susar_withdrawn")
"""The history actions that say whether the case stands withdrawn (the latest one of them)."""


def _withdrawn(session: Session, signal: SusarWithdrawn, now: datetime, protocol: Protocol) -> None:
    """No longer a SUSAR: open report obligations are cancelled (filed ones stay as they were), with why; pages not
    yet handed over are not sent; whoever was paged hears once that the reports are no longer due or, for reports
    already submitted, that a follow-up or nullification may be needed (as for a withdrawn SAE)."""
    data = signal.data
    alert = store.find_alert_by_thread(session, thread_key=susar_thread_key(signal.trialid, data))
    if alert is None:
        return  # never seen as a SUSAR here: nothing to withdraw
    marks = [e.action for e in store.history_for(session, alert_id=alert.id) if e.action in CASE_MARKS]
    already = bool(marks) and marks[-1] == "susar_withdrawn"  # a redelivery: its notice is queued already
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="susar_withdrawn", detail=data.reason, now=now)
    if already:
        return
    reports = [o for o in store.obligations_for(session, alert_ids=[alert.id]) if o.kind in SUSAR_OBLIGATIONS]
    cancelled = 0
    for obligation in reports:
        if obligation.state in ("open", "overdue"):
            alert_actions.cancel(
                session,
                alert=alert,
                obligation=obligation,
                actor=SYSTEM,
                reason=f"no longer a SUSAR: {data.reason}"[:2000],
                now=now,
            )
            cancelled += 1
    filed = [
        f"{LABELS[o.kind]} to {recipient_of(o.description) or 'its recipient'}: {o.reference or 'no reference'}"
        for o in reports
        if o.state == "completed"
    ]
    paged = paged_recipients(sent_messages(session, alert.id, now))
    withdraw_unsent(session, alert.id, now=now, reason=f"not sent: no longer a SUSAR ({data.reason})")
    if filed and not paged:  # a submitted report's case withdrawn is news for the SUSAR's people, paged or not
        roles = rules_of(protocol).notify_roles
        paged = resolve_targets(protocol, initial_targets(protocol, roles, escalates=True))
    if cancelled or filed:
        content = susar_withdrawn_mail(signal.trialid, data, cancelled=cancelled, filed=filed)
        store.queue_messages(session, alert_id=alert.id, messages=messages_to(signal.id, paged, content), now=now)
