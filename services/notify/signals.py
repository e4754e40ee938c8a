"""Notify's service layer: apply one safety signal inside the consumer's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from services.notify import store
from services.notify.lab_alerts import LAB_KIND, plan_lab_alert
from services.notify.models import Alert
from services.notify.sae_alerts import SAE_KIND, plan_sae_alert, report_deadline, update_needs_paging
from shared.events import LabToxicity, SaeDetected, SaeUpdated, SignalEnvelope
from shared.kafka import PoisonMessage
from shared.outbox import Outgoing
from shared.protocol import Protocol

SYSTEM = "system"


def apply_signal(
    session: Session, envelope: SignalEnvelope, now: datetime, *, protocol: Protocol
) -> Sequence[Outgoing]:
    if envelope.trialid != protocol.trial_id:
        raise PoisonMessage(f"signal for trial '{envelope.trialid}' but notify runs protocol '{protocol.trial_id}'")
    if isinstance(envelope, SaeDetected | SaeUpdated):
        _apply_sae(session, envelope, now, protocol)
        return []
    if isinstance(envelope, LabToxicity):
        _apply_lab(session, envelope, now, protocol)
        return []
    raise PoisonMessage(f"unsupported signal {type(envelope).__name__}")


def _apply_lab(session: Session, signal: LabToxicity, now: datetime, protocol: Protocol) -> None:
    """Safety signals a term only when it gets worse, so every lab signal pages, threaded per term."""
    plan = plan_lab_alert(signal, protocol)
    data = signal.data
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is None:
        alert = store.create_alert(
            session,
            plan=plan,
            kind=LAB_KIND,
            trial_id=signal.trialid,
            site_id=data.site_id,
            subject_id=data.subject_id,
            now=now,
        )
        action = "opened"
    else:
        alert.title = plan.title
        alert.details = plan.details
        _reopen(alert)
        alert.updated_at = now
        session.add(alert)
        action = "worsened"
    store.add_history(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action=action,
        detail=f"{data.term} grade {data.grade} (baseline {data.baseline_grade}) from result {data.result_id}",
        now=now,
    )
    store.queue_messages(session, alert_id=alert.id, messages=plan.messages, now=now)


def _apply_sae(session: Session, signal: SaeDetected | SaeUpdated, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    plan = plan_sae_alert(signal, protocol, reason="new SAE")
    due = report_deadline(data.awareness_at, protocol.sae.report_within_hours)
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is None:
        alert = store.create_alert(
            session,
            plan=plan,
            kind=SAE_KIND,
            trial_id=signal.trialid,
            site_id=data.site_id,
            subject_id=data.subject_id,
            now=now,
        )
        store.add_history(
            session,
            alert_id=alert.id,
            actor=SYSTEM,
            action="opened",
            detail=f"{signal.type} from event {data.source_event_id}; report due {due.isoformat()}",
            now=now,
        )
        store.queue_messages(session, alert_id=alert.id, messages=plan.messages, now=now)
        return
    reason = update_needs_paging(alert.details, data)
    store.add_history(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action="follow_up",
        detail=f"AE version {data.ae_version}: " + (reason or "no worsening"),
        now=now,
    )
    alert.details = data.model_dump(mode="json")
    alert.updated_at = now
    if reason is not None:
        _reopen(alert)  # worse news pages again, even if the first report was acknowledged
        repage = plan_sae_alert(signal, protocol, reason=reason)
        store.queue_messages(session, alert_id=alert.id, messages=repage.messages, now=now)
    session.add(alert)


def _reopen(alert: Alert) -> None:
    """The acknowledgement covered the earlier news; its record stays in the history."""
    alert.state = "open"
    alert.acknowledged_at = None
    alert.acknowledged_by = None
