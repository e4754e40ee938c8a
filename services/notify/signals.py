"""Notify's service layer: apply one safety signal inside the consumer's transaction.

Every signal type has a handler; follow-ups thread into the alert of the same AE (or DLT, or arm).
Worse news re-pages (and restarts escalation); an identical re-delivery only adds history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session

from services.notify import alert_actions, sae_retraction_signals, scheduling, store
from services.notify.acute_reaction_alerts import ACUTE_REACTION_KIND, plan_acute_reaction
from services.notify.acute_retraction_signals import apply_acute_withdrawn
from services.notify.data_quality_alerts import DATA_QUALITY_KIND, plan_data_quality
from services.notify.dlt_alerts import (
    DLT_KIND,
    DOSE_RECOMMENDATION_KIND,
    STOPPING_RULE_KIND,
    TRIAL_LEVEL,
    dlt_revision_messages,
    dlt_thread_key,
    dlt_worse,
    information_kind,
    plan_dlt_suspected,
    plan_dlt_withdrawn,
    plan_dose_recommendation,
    plan_information,
    plan_stopping_rule,
    stopping_worse,
)
from services.notify.lab_alerts import LAB_KIND, plan_lab_alert, raised_before
from services.notify.lab_withdrawal_signals import apply_lab_withdrawn, open_what_stands
from services.notify.models import Alert
from services.notify.obligations import ACUTE_REACTION_REVIEW, DLT_REVIEW, LAB_REVIEW, SAE_REPORT, STOPPING_RULE_REVIEW
from services.notify.response_alerts import RESPONSE_KIND, SAMPLE_KIND, plan_response_lost, plan_sample_missed
from services.notify.sae_alerts import SAE_KIND, AlertPlan, plan_sae_alert, report_deadline, update_needs_paging
from services.notify.susar_signals import apply_susar
from shared.clock import utc
from shared.events import (
    AcuteReactionDetected,
    AcuteReactionWithdrawn,
    AssessmentMissed,
    CohortDecision,
    DataQualityFlagged,
    DltDecided,
    DltSuspected,
    DltWithdrawn,
    DoseRecommended,
    LabToxicity,
    LabToxicityWithdrawn,
    ProtocolDeviation,
    ResponseLost,
    SaeDetected,
    SaeUpdated,
    SaeWithdrawn,
    SignalEnvelope,
    StoppingRuleFired,
    SusarDetected,
    SusarUpdated,
    SusarWithdrawn,
)
from shared.kafka import PoisonMessage
from shared.outbox import Outgoing
from shared.protocol import Protocol

SYSTEM = "system"


def apply_signal(
    session: Session,
    envelope: SignalEnvelope,
    now: datetime,
    *,
    protocol: Protocol,
    console_url: str | None = None,
    live: bool = False,
) -> Sequence[Outgoing]:
    """`live`: the signal came on the signals topic, not on the routine lane a backfill's signals take."""
    if envelope.trialid != protocol.trial_id:
        raise PoisonMessage(f"signal for trial '{envelope.trialid}' but notify runs protocol '{protocol.trial_id}'")
    store.lock_audit(session)
    if isinstance(envelope, SaeDetected | SaeUpdated):
        _apply_sae(session, envelope, now, protocol)
    elif isinstance(envelope, SaeWithdrawn):
        sae_retraction_signals.apply_withdrawn(session, envelope, now, protocol=protocol)
    elif isinstance(envelope, LabToxicity):
        _apply_lab(session, envelope, now, protocol, live=live)
    elif isinstance(envelope, LabToxicityWithdrawn):
        opened = open_what_stands(
            session, envelope, now, open_finding=lambda finding: _apply_lab(session, finding, now, protocol, live=True)
        )
        if not opened:
            apply_lab_withdrawn(session, envelope, now)
    elif isinstance(envelope, DltSuspected):
        _apply_dlt_suspected(session, envelope, now, protocol)
    elif isinstance(envelope, DltWithdrawn):
        _apply_dlt_withdrawn(session, envelope, now, protocol)
    elif isinstance(envelope, DltDecided):
        _apply_dlt_decided(session, envelope, now, protocol)
    elif isinstance(envelope, StoppingRuleFired):
        _apply_stopping_rule(session, envelope, now, protocol)
    elif isinstance(envelope, DoseRecommended):
        _apply_dose_recommendation(session, envelope, now, protocol)
    elif isinstance(envelope, ResponseLost) or (
        isinstance(envelope, AssessmentMissed) and envelope.data.category == "sample"
    ):
        _apply_notice(session, envelope, now, protocol)
    elif isinstance(envelope, CohortDecision | AssessmentMissed | ProtocolDeviation):
        _apply_information(session, envelope, now, protocol)
    elif isinstance(envelope, SusarDetected | SusarUpdated | SusarWithdrawn):
        apply_susar(session, envelope, now, protocol=protocol)
    elif isinstance(envelope, DataQualityFlagged):
        _apply_data_quality(session, envelope, now, protocol)
    elif isinstance(envelope, AcuteReactionDetected):
        _apply_acute_reaction(session, envelope, now, protocol)
    elif isinstance(envelope, AcuteReactionWithdrawn):
        apply_acute_withdrawn(session, envelope, now)
    else:  # pragma: no cover - the union above is exhaustive; a new signal type must be handled here
        raise PoisonMessage(f"unsupported signal {type(envelope).__name__}")
    store.link_queued_to_console(session, console_url=console_url, now=now)
    return []


def _open(
    session: Session,
    plan: AlertPlan,
    *,
    kind: str,
    trial_id: str,
    site_id: str,
    subject_id: str,
    detail: str,
    now: datetime,
    protocol: Protocol,
) -> Alert:
    """A new alert: its initial notification (escalation step 0), and its clocks if it has an obligation."""
    alert = store.create_alert(
        session, plan=plan, kind=kind, trial_id=trial_id, site_id=site_id, subject_id=subject_id, now=now
    )
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="opened", detail=detail, now=now)
    store.queue_messages(session, alert_id=alert.id, messages=plan.messages, now=now, live=plan.live)
    if plan.escalates:
        scheduling.start_escalation(session, alert=alert, protocol=protocol, now=now)
    if plan.obligation is not None:
        for obligation in store.open_obligations(session, alert_id=alert.id):
            scheduling.schedule_obligation(session, obligation=obligation, protocol=protocol, now=now)
    return alert


def _repage(session: Session, alert: Alert, plan: AlertPlan, *, now: datetime, protocol: Protocol) -> None:
    """Worse news: the earlier acknowledgement (and any snooze) covered the earlier news; page from step 0."""
    alert.state = "open"
    alert.acknowledged_at = None
    alert.acknowledged_by = None
    alert.snoozed_until = None
    alert.updated_at = now
    session.add(alert)
    store.queue_messages(session, alert_id=alert.id, messages=plan.messages, now=now, live=plan.live)
    if plan.escalates:
        scheduling.start_escalation(session, alert=alert, protocol=protocol, now=now)


def _apply_lab(session: Session, signal: LabToxicity, now: datetime, protocol: Protocol, *, live: bool) -> None:
    """Safety signals a term only when it gets worse, so every lab signal notifies, threaded per term; a worse
    result after the review was recorded opens a new review. A `live` one (raised by a result a site entered on its
    own, not in a backfill) pages ahead of a backfill's lab pages."""
    plan = plan_lab_alert(signal, protocol, live=live)
    data = signal.data
    grade = f"{'at least ' if data.floor else ''}grade {data.grade}"
    _open_or_worsen(
        session,
        plan,
        kind=LAB_KIND,
        review=LAB_REVIEW,
        trial_id=signal.trialid,
        site_id=data.site_id,
        subject_id=data.subject_id,
        detail=f"{data.term} {grade} (baseline {data.baseline_grade}) from result {data.result_id}",
        now=now,
        protocol=protocol,
        superseded=lambda shown: raised_before(shown, data),
    )


def _apply_acute_reaction(session: Session, signal: AcuteReactionDetected, now: datetime, protocol: Protocol) -> None:
    """Safety signals an acute reaction once per grade it reaches: a worse grade re-pages the AE's alert and
    opens a new review when the earlier one was recorded."""
    plan = plan_acute_reaction(signal, protocol)
    data = signal.data
    _open_or_worsen(
        session,
        plan,
        kind=ACUTE_REACTION_KIND,
        review=ACUTE_REACTION_REVIEW,
        trial_id=signal.trialid,
        site_id=data.site_id,
        subject_id=data.subject_id,
        detail=f"{data.term} grade {data.grade}: {data.reason}"[:1000],
        now=now,
        protocol=protocol,
    )


def _open_or_worsen(
    session: Session,
    plan: AlertPlan,
    *,
    kind: str,
    review: str,
    trial_id: str,
    site_id: str,
    subject_id: str,
    detail: str,
    now: datetime,
    protocol: Protocol,
    superseded: Callable[[dict[str, Any]], bool] | None = None,
) -> None:
    """For signals safety sends only when things get worse: the first opens the thread's alert; a later one
    re-pages it, and opens a new review (obligation kind `review`) when the earlier one was already recorded.

    One that `superseded(details shown)` says safety raised before the alert's (delivered after it, by another
    lane) is only recorded: it neither replaces the worse finding shown nor pages again."""
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is not None and superseded is not None and superseded(alert.details):
        late = f"{detail}, raised before the finding shown"
        store.record(session, alert_id=alert.id, actor=SYSTEM, action="flagged_again", detail=late, now=now)
        return
    if alert is None:
        _open(
            session,
            plan,
            kind=kind,
            trial_id=trial_id,
            site_id=site_id,
            subject_id=subject_id,
            detail=detail,
            now=now,
            protocol=protocol,
        )
        return
    alert.title = plan.title
    alert.details = plan.details
    _repage(session, alert, plan, now=now, protocol=protocol)
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="worsened", detail=detail, now=now)
    reviewing = [o for o in store.open_obligations(session, alert_id=alert.id) if o.kind == review]
    if plan.obligation is not None and not reviewing:
        _add_review(session, alert, plan, now=now, protocol=protocol)


def _add_review(session: Session, alert: Alert, plan: AlertPlan, *, now: datetime, protocol: Protocol) -> None:
    """A fresh review obligation on an existing alert, with its clocks (none if this very one exists already)."""
    obligation = store.add_obligation(session, plan=plan, trial_id=alert.trial_id, subject_id=alert.subject_id)
    if obligation is not None:
        scheduling.schedule_obligation(session, obligation=obligation, protocol=protocol, now=now)


def _apply_notice(session: Session, signal: ResponseLost | AssessmentMissed, now: datetime, protocol: Protocol) -> None:
    """A lost response or a missed sample: one alert each, notified once; a re-delivery only adds history."""
    if isinstance(signal, ResponseLost):
        plan, kind = plan_response_lost(signal, protocol), RESPONSE_KIND
    else:
        plan, kind = plan_sample_missed(signal, protocol), SAMPLE_KIND
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is not None:
        store.record(session, alert_id=alert.id, actor=SYSTEM, action="flagged_again", detail=plan.title, now=now)
        return
    _open(
        session,
        plan,
        kind=kind,
        trial_id=signal.trialid,
        site_id=signal.data.site_id,
        subject_id=signal.data.subject_id,
        detail=plan.title,
        now=now,
        protocol=protocol,
    )


def _apply_data_quality(session: Session, signal: DataQualityFlagged, now: datetime, protocol: Protocol) -> None:
    """A finding for the site: notified once per record and code; a changed finding notifies again."""
    plan = plan_data_quality(signal, protocol)
    data = signal.data
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is None:
        _open(
            session,
            plan,
            kind=DATA_QUALITY_KIND,
            trial_id=signal.trialid,
            site_id=data.site_id,
            subject_id=data.subject_id,
            detail=data.detail[:1000],
            now=now,
            protocol=protocol,
        )
        return
    if alert.details.get("detail") == data.detail:
        store.record(
            session, alert_id=alert.id, actor=SYSTEM, action="flagged_again", detail=data.detail[:1000], now=now
        )
        return
    alert.title = plan.title
    alert.details = plan.details
    _repage(session, alert, plan, now=now, protocol=protocol)
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="updated", detail=data.detail[:1000], now=now)


def _apply_sae(session: Session, signal: SaeDetected | SaeUpdated, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    due = report_deadline(data.awareness_at, protocol.sae.report_within_hours)
    overdue = f"; the report is already OVERDUE (due {due.strftime('%Y-%m-%d %H:%M UTC')})" if due <= now else ""
    plan = plan_sae_alert(signal, protocol, reason=f"new SAE{overdue}", overdue=due <= now)
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is not None and sae_retraction_signals.is_withdrawn(session, alert):
        # the site restored the AE: the SAE is back with its original clock
        restored = sae_retraction_signals.apply_restored(session, alert, signal, now, protocol=protocol)
        _follow_up(session, alert, data=data, version=data.ae_version, reason=restored, now=now)
        if restored is not None:
            owed = [o for o in store.open_obligations(session, alert_id=alert.id) if o.kind == SAE_REPORT]
            overdue_now = any(utc(o.due_at) <= now for o in owed)
            page = plan_sae_alert(signal, protocol, reason=restored, overdue=overdue_now, restored=True)
            _repage(session, alert, page, now=now, protocol=protocol)
        return
    if alert is None:
        _open(
            session,
            plan,
            kind=SAE_KIND,
            trial_id=signal.trialid,
            site_id=data.site_id,
            subject_id=data.subject_id,
            detail=f"{signal.type} from event {data.source_event_id}; report due {due.isoformat()}",
            now=now,
            protocol=protocol,
        )
        return
    reason = update_needs_paging(alert.details, data)
    for obligation in store.open_obligations(session, alert_id=alert.id):
        if obligation.kind == SAE_REPORT and utc(data.awareness_at) < obligation.clock_started_at:
            scheduling.move_deadline_earlier(
                session,
                obligation=obligation,
                protocol=protocol,
                started_at=utc(data.awareness_at),
                basis=data.awareness_basis.value,
                due_at=due,
                now=now,
            )
            why = (
                f"it re-enters AE {data.clock_from_ae_id}, which the site took back (that AE's clock)"
                if data.clock_from_ae_id is not None
                else "the site knew earlier"
            )
            reason = f"the report is due earlier, by {due.strftime('%Y-%m-%d %H:%M UTC')}: {why}"
    _follow_up(session, alert, data=data, version=data.ae_version, reason=reason, now=now)
    if reason is not None:
        _repage(session, alert, plan_sae_alert(signal, protocol, reason=reason), now=now, protocol=protocol)


def _follow_up(
    session: Session, alert: Alert, *, data: BaseModel, version: int, reason: str | None, now: datetime
) -> None:
    """Another version of what the alert is about: history always; the alert shows the newest version's details
    (an older version arriving late is recorded but does not replace them)."""
    detail = f"AE version {version}: " + (reason or "no worsening")
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="follow_up", detail=detail, now=now)
    shown = alert.details.get("ae_version")
    if not isinstance(shown, int) or version >= shown:
        alert.details = data.model_dump(mode="json")
    alert.updated_at = now
    session.add(alert)


def _apply_dlt_suspected(session: Session, signal: DltSuspected, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    alert = store.find_alert_by_thread(session, thread_key=dlt_thread_key(signal.trialid, data.dlt_id))
    if alert is None:
        plan = plan_dlt_suspected(signal, protocol, reason="new suspected DLT")
        _open(
            session,
            plan,
            kind=DLT_KIND,
            trial_id=signal.trialid,
            site_id=data.site_id,
            subject_id=data.subject_id,
            detail=f"{data.criterion}: {data.reason}",
            now=now,
            protocol=protocol,
        )
        return
    reviewing = [o for o in store.open_obligations(session, alert_id=alert.id) if o.kind == DLT_REVIEW]
    reason = dlt_worse(alert.details, data.grade) if reviewing else "suspected again after it was closed"
    _follow_up(session, alert, data=data, version=data.ae_version, reason=reason, now=now)
    if reason is None:
        return
    plan = plan_dlt_suspected(signal, protocol, reason=reason)
    _repage(session, alert, plan, now=now, protocol=protocol)
    if not reviewing:
        _add_review(session, alert, plan, now=now, protocol=protocol)


def _apply_dlt_withdrawn(session: Session, signal: DltWithdrawn, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    plan = plan_dlt_withdrawn(signal, protocol)
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is None:
        _open(
            session,
            plan,
            kind=DLT_KIND,
            trial_id=signal.trialid,
            site_id=data.site_id,
            subject_id=data.subject_id,
            detail=f"withdrawn before notify saw it suspected: {data.reason}",
            now=now,
            protocol=protocol,
        )
        return
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="dlt_withdrawn", detail=data.reason, now=now)
    for obligation in store.open_obligations(session, alert_id=alert.id):
        if obligation.kind == DLT_REVIEW:
            alert_actions.cancel(
                session,
                alert=alert,
                obligation=obligation,
                actor=SYSTEM,
                reason=f"DLT withdrawn: {data.reason}",
                now=now,
            )
    store.queue_messages(session, alert_id=alert.id, messages=plan.messages, now=now)


def _apply_dlt_decided(session: Session, signal: DltDecided, now: datetime, protocol: Protocol) -> None:
    """Safety's decision is the review: it completes the review obligation, with the decider as actor.

    A revision (`revises`) is mailed once to the DLT's roles, no clock: they were paged for the suspicion and took
    its decision as the end of it; the arm's cohort mail, if the arm moved at all, does not say why it moved."""
    data = signal.data
    alert = store.find_alert_by_thread(session, thread_key=dlt_thread_key(signal.trialid, data.dlt_id))
    if alert is None:
        plan = AlertPlan(
            alert_id=signal.id,
            thread_key=dlt_thread_key(signal.trialid, data.dlt_id),
            title=f"DLT {data.decision} (subject {data.subject_id})",
            details=data.model_dump(mode="json"),
            obligation=None,
            messages=(),
        )
        alert = store.create_alert(
            session,
            plan=plan,
            kind=DLT_KIND,
            trial_id=signal.trialid,
            site_id=TRIAL_LEVEL,
            subject_id=data.subject_id,
            now=now,
        )
        alert.state = "resolved"  # the decision was made before notify saw a suspicion: nothing left to page
        session.add(alert)
    revised = f" (revising the earlier decision: {data.revises})" if data.revises else ""
    store.record(
        session,
        alert_id=alert.id,
        actor=data.decided_by,
        action="dlt_revised" if data.revises else f"dlt_{data.decision}",
        detail=f"DLT {data.decision} by {data.decided_by}{revised}: {data.reason}",
        now=now,
        decided_at=data.decided_at.isoformat(),
    )
    store.queue_messages(session, alert_id=alert.id, messages=dlt_revision_messages(signal, protocol), now=now)
    for obligation in store.open_obligations(session, alert_id=alert.id):
        if obligation.kind == DLT_REVIEW:
            alert_actions.complete(
                session,
                alert=alert,
                obligation=obligation,
                actor=data.decided_by,
                reference=f"DLT {data.decision} ({signal.id})"[:200],
                comment=data.reason,
                at=data.decided_at,
                now=now,
            )


def _apply_stopping_rule(session: Session, signal: StoppingRuleFired, now: datetime, protocol: Protocol) -> None:
    data = signal.data
    plan = plan_stopping_rule(signal, protocol)
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is None:
        _open(
            session,
            plan,
            kind=STOPPING_RULE_KIND,
            trial_id=signal.trialid,
            site_id=TRIAL_LEVEL,
            subject_id=TRIAL_LEVEL,
            detail=data.reason,
            now=now,
            protocol=protocol,
        )
        return
    reviewing = [o for o in store.open_obligations(session, alert_id=alert.id) if o.kind == STOPPING_RULE_REVIEW]
    dlts = data.dlt_confirmed + data.dlt_suspected
    reason = stopping_worse(alert.details, dlts) if reviewing else "fired again after its review"
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="follow_up", detail=reason or "no change", now=now)
    alert.details = plan.details
    alert.title = plan.title
    alert.updated_at = now
    session.add(alert)
    if reason is None:
        return
    _repage(session, alert, plan, now=now, protocol=protocol)
    if not reviewing:
        _add_review(session, alert, plan, now=now, protocol=protocol)


def _apply_dose_recommendation(session: Session, signal: DoseRecommended, now: datetime, protocol: Protocol) -> None:
    """A new, changed or withdrawn recommendation pages again with a fresh review obligation."""
    plan = plan_dose_recommendation(signal, protocol)
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is None:
        _open(
            session,
            plan,
            kind=DOSE_RECOMMENDATION_KIND,
            trial_id=signal.trialid,
            site_id=TRIAL_LEVEL,
            subject_id=TRIAL_LEVEL,
            detail=signal.data.reason,
            now=now,
            protocol=protocol,
        )
        return
    if alert.details == plan.details:
        store.record(session, alert_id=alert.id, actor=SYSTEM, action="follow_up", detail="no change", now=now)
        return
    alert.details = plan.details
    alert.title = plan.title
    alert.updated_at = now
    session.add(alert)
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="updated", detail=signal.data.reason, now=now)
    _repage(session, alert, plan, now=now, protocol=protocol)
    _add_review(session, alert, plan, now=now, protocol=protocol)


def _apply_information(
    session: Session,
    signal: CohortDecision | AssessmentMissed | ProtocolDeviation,
    now: datetime,
    protocol: Protocol,
) -> None:
    plan = plan_information(signal, protocol)
    data = signal.data
    site = getattr(data, "site_id", TRIAL_LEVEL)
    subject = getattr(data, "subject_id", TRIAL_LEVEL)
    alert = store.find_alert_by_thread(session, thread_key=plan.thread_key)
    if alert is None:
        _open(
            session,
            plan,
            kind=information_kind(signal),
            trial_id=signal.trialid,
            site_id=site,
            subject_id=subject,
            detail=plan.title,
            now=now,
            protocol=protocol,
        )
        return
    alert.title = plan.title
    alert.details = plan.details
    _repage(session, alert, plan, now=now, protocol=protocol)
    store.record(session, alert_id=alert.id, actor=SYSTEM, action="updated", detail=plan.title, now=now)
