"""Pure: a lost haematological response, and an immunology (or other protocol) sample missed, as informational
alerts: notified once, acknowledged by a person, no clock (the protocol implies none).

Owners: a lost response goes to `response.notify_roles` (the safety officer and the PI in the shipped protocol:
a subject who lost a response may need transfusion support or a new look at the product); a missed sample goes
to its schedule's `notify_roles` (the site's data manager), contacts listing `sites` only for their sites, and
to the DLT roles if that leaves nobody, so a flag is never addressed to no one.
"""

from __future__ import annotations

from services.notify.escalation import Recipient
from services.notify.mail_content import MailContent, notice_mail, when
from services.notify.notice_alerts import notice_plan, site_recipients
from services.notify.sae_alerts import AlertPlan, messages_to, plan_messages
from shared.events import AssessmentMissed, AssessmentMissedData, ResponseData, ResponseLost
from shared.protocol import Protocol

RESPONSE_KIND = "response_lost"
SAMPLE_KIND = "sample_missed"
LEVELS = {"complete": "complete response (CR)", "partial": "partial response (PR)", "none": "no response"}


def response_lost_mail(trial_id: str, data: ResponseData) -> MailContent:
    was, now = LEVELS[data.previous_level], LEVELS[data.level]
    return notice_mail(
        subject=f"[{trial_id}] Response lost: subject {data.subject_id} ({was} -> {now})",
        heading=f"Subject {data.subject_id} no longer has a {was}: now {now}.",
        rows=[
            ("Trial", trial_id),
            ("Site", data.site_id),
            ("Subject", data.subject_id),
            ("Was", f"{was} since {when(data.previous_since) if data.previous_since else 'unknown'}"),
            ("Now", now),
            ("Lost at", when(data.lost_at)),
            ("Duration", f"{data.duration_days} days"),
            ("Why", data.reason),
        ],
        footer="Acknowledge the alert once the subject's care team knows.",
    )


def plan_response_lost(signal: ResponseLost, protocol: Protocol) -> AlertPlan:
    data = signal.data
    thread_key = f"{RESPONSE_KIND}:{signal.trialid}:{data.subject_id}:{signal.id}"
    roles = list(protocol.response.notify_roles) if protocol.response else list(protocol.dlt.notify_roles)
    title = (
        f"Response lost: {LEVELS[data.previous_level]} -> {LEVELS[data.level]} "
        f"(subject {data.subject_id}, site {data.site_id})"
    )
    return notice_plan(
        thread_key=thread_key,
        title=title,
        data=data,
        messages=plan_messages(signal.id, protocol, roles, response_lost_mail(signal.trialid, data)),
    )


def sample_recipients(protocol: Protocol, data: AssessmentMissedData) -> tuple[Recipient, ...]:
    kind = data.assessment.split(" sample: ", 1)[0]
    schedule = next((s for s in protocol.samples if s.kind == kind), None)
    roles = schedule.notify_roles if schedule is not None else []
    return site_recipients(protocol, roles, data.site_id, fallback_roles=protocol.dlt.notify_roles)


def sample_missed_mail(trial_id: str, data: AssessmentMissedData) -> MailContent:
    return notice_mail(
        subject=f"[{trial_id}] Sample not collected: {data.assessment}, subject {data.subject_id}",
        heading=f"No {data.assessment} was recorded within its window.",
        rows=[
            ("Trial", trial_id),
            ("Site", data.site_id),
            ("Subject", data.subject_id),
            ("Window", f"{when(data.due_from)} to {when(data.due_until)}"),
        ],
        footer="If it was collected, please record it in the EDC; otherwise document the missed sample.",
    )


def plan_sample_missed(signal: AssessmentMissed, protocol: Protocol) -> AlertPlan:
    data = signal.data
    thread_key = f"{SAMPLE_KIND}:{signal.trialid}:{data.subject_id}:{data.assessment}"
    return notice_plan(
        thread_key=thread_key,
        title=f"Sample not collected: {data.assessment} (subject {data.subject_id}, site {data.site_id})",
        data=data,
        messages=messages_to(signal.id, sample_recipients(protocol, data), sample_missed_mail(signal.trialid, data)),
    )
