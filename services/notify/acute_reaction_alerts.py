"""Pure: an acute-reaction signal becomes an alert threaded per AE, paged to the protocol's
`acute_reactions.notify_roles` with a review obligation due `review_hours` after Sentinel received the AE
(null: notify once, no clock). A worse grade of the same AE re-pages the same alert.
"""

from __future__ import annotations

from services.notify.escalation import initial_targets
from services.notify.mail_content import MailContent, notice_mail, when
from services.notify.obligations import ACUTE_REACTION_REVIEW, deadline
from services.notify.sae_alerts import AlertPlan, ObligationPlan, plan_messages
from services.notify.sae_retraction import retraction_words
from shared.clock import utc
from shared.events import AcuteReactionData, AcuteReactionDetected, AcuteReactionWithdrawalData, deterministic_id
from shared.protocol import Protocol

ACUTE_REACTION_KIND = "acute_reaction"


def acute_thread_key(signal: AcuteReactionDetected) -> str:
    return acute_thread(signal.trialid, signal.data.subject_id, signal.data.ae_id)


def acute_thread(trial_id: str, subject_id: str, ae_id: str) -> str:
    return f"{ACUTE_REACTION_KIND}:{trial_id}:{subject_id}:{ae_id}"


def acute_withdrawn_mail(trial_id: str, data: AcuteReactionWithdrawalData) -> MailContent:
    """The one notice to whoever was paged about the reaction: its review is no longer owed."""
    return notice_mail(
        subject=f"[{trial_id}] Acute reaction withdrawn, no review needed: {data.term}, subject {data.subject_id}",
        heading=f"Acute reaction withdrawn: {retraction_words(data)}.",
        rows=[
            ("Trial", trial_id),
            ("Site", data.site_id),
            ("Subject", data.subject_id),
            ("Event", f"{data.term} grade {data.grade} (AE {data.ae_id}) after infusion {data.dose_number}"),
            ("Site's status", f"{data.status.replace('_', ' ')}, {when(data.changed_at)}"),
            ("Site's reason", data.reason or "not given"),
        ],
        footer="Its review is no longer owed: no reminders or overdue pages will follow for this AE unless the site "
        "restores it.",
    )


def acute_title(data: AcuteReactionData) -> str:
    dlt = ", DLT grade" if data.dlt_grade else ""
    return (
        f"Acute reaction: {data.term} grade {data.grade}{dlt} after infusion {data.dose_number} "
        f"(subject {data.subject_id}, site {data.site_id})"
    )[:500]


def plan_acute_reaction(signal: AcuteReactionDetected, protocol: Protocol) -> AlertPlan:
    data = signal.data
    rules = protocol.acute_reactions
    roles = list(rules.notify_roles) if rules is not None else list(protocol.sae.notify_roles)
    hours = rules.review_hours if rules is not None else None
    thread_key = acute_thread_key(signal)
    alert_id = deterministic_id("alert", thread_key)
    obligation = None
    if hours is not None:
        started = utc(data.received_at)
        obligation = ObligationPlan(
            id=deterministic_id("obligation", alert_id, ACUTE_REACTION_REVIEW, signal.id),
            kind=ACUTE_REACTION_REVIEW,
            description=f"Review the acute reaction {data.term} grade {data.grade} within {hours} h",
            clock_started_at=started,
            clock_basis="receipt",
            due_at=deadline(started, hours),
        )
    onset = when(data.onset_at) if data.onset_at is not None else f"{data.onset} (no time recorded)"
    after = f"{data.hours_after_infusion} h" if data.hours_after_infusion is not None else "not known (date only)"
    rows = [
        ("Trial", signal.trialid),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("Event", f"{data.term} (AE {data.ae_id}, version {data.ae_version})"),
        ("CTCAE grade", str(data.grade) + (f" (was {data.previous_grade})" if data.previous_grade else "")),
        ("Infusion", f"number {data.dose_number} ({data.dose_id}), started {when(data.infusion_at)}"),
        ("Onset", onset),
        ("Time after infusion", after),
        ("Why", data.reason),
    ]
    if data.dlt_grade:
        rows.append(("DLT", "grade at or above the DLT criteria's: judged as a possible DLT as well"))
    if obligation is not None:
        rows.append(("Review due", f"{when(obligation.due_at)} ({hours} h)"))
    due = f", review due {when(obligation.due_at)}" if obligation is not None else ""
    content = notice_mail(
        subject=f"[{signal.trialid}] Acute reaction {data.term} grade {data.grade}{due}, subject {data.subject_id}",
        heading=f"Acute reaction within the window after infusion {data.dose_number}: {data.term} grade {data.grade}.",
        rows=rows,
        footer="Acknowledge the alert to stop paging; only recording the review closes the obligation."
        if obligation is not None
        else None,
    )
    targets = initial_targets(protocol, roles, escalates=obligation is not None)
    return AlertPlan(
        alert_id=alert_id,
        thread_key=thread_key,
        title=acute_title(data),
        details=data.model_dump(mode="json"),
        obligation=obligation,
        messages=plan_messages(signal.id, protocol, targets, content),
    )
