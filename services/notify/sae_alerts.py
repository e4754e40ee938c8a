"""Pure: what an SAE signal means for people: an alert, a 24 h reporting obligation, and mails.

The clock starts at the site's awareness (or our receipt), never at processing time, and the deadline
is exact arithmetic on aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.notify.escalation import Channel, Recipient, initial_targets, resolve_targets
from services.notify.mail_content import MailContent, sae_mail
from services.notify.obligations import SAE_REPORT, deadline
from shared.clock import utc
from shared.events import SaeData, SaeDetected, SaeUpdated, SaeWithdrawalData, deterministic_id
from shared.protocol import Protocol

SAE_KIND = "sae"


@dataclass(frozen=True)
class ObligationPlan:
    id: str
    kind: str
    description: str
    clock_started_at: datetime
    clock_basis: str
    due_at: datetime


@dataclass(frozen=True)
class MessagePlan:
    delivery_id: str
    recipient: str
    content: MailContent
    channel: Channel = "email"


@dataclass(frozen=True)
class AlertPlan:
    alert_id: str
    thread_key: str
    title: str
    details: dict[str, object]
    obligation: ObligationPlan | None
    messages: tuple[MessagePlan, ...]
    live: bool = False
    """About a finding a site has just entered, not a backfill's: its pages rank above other pages
    (services.notify.urgency.LIVE_FINDING)."""

    @property
    def escalates(self) -> bool:
        """Alerts with a clock page through the escalation steps until acknowledged; others notify once."""
        return self.obligation is not None


def sae_thread_key(trial_id: str, data: SaeData | SaeWithdrawalData) -> str:
    """All versions and follow-ups of one AE thread into one alert."""
    return f"{SAE_KIND}:{trial_id}:{data.subject_id}:{data.ae_id}"


def report_deadline(awareness_at: datetime, hours: int) -> datetime:
    return deadline(awareness_at, hours)


def plan_sae_alert(
    signal: SaeDetected | SaeUpdated, protocol: Protocol, *, reason: str, overdue: bool = False, restored: bool = False
) -> AlertPlan:
    data = signal.data
    thread_key = sae_thread_key(signal.trialid, data)
    alert_id = deterministic_id("alert", thread_key)
    due_at = report_deadline(data.awareness_at, protocol.sae.report_within_hours)
    obligation = ObligationPlan(
        id=deterministic_id("obligation", alert_id, SAE_REPORT),
        kind=SAE_REPORT,
        description=f"File the SAE report within {protocol.sae.report_within_hours} h of awareness",
        clock_started_at=utc(data.awareness_at),
        clock_basis=data.awareness_basis.value,
        due_at=due_at,
    )
    title = f"SAE: {data.term} (subject {data.subject_id}, site {data.site_id})"
    hours = protocol.sae.report_within_hours
    content = sae_mail(
        signal.trialid, data, due_at=due_at, hours=hours, reason=reason, overdue=overdue, restored=restored
    )
    targets = initial_targets(protocol, protocol.sae.notify_roles, escalates=True)
    messages = plan_messages(signal.id, protocol, targets, content)
    details: dict[str, object] = data.model_dump(mode="json")
    return AlertPlan(
        alert_id=alert_id,
        thread_key=thread_key,
        title=title,
        details=details,
        obligation=obligation,
        messages=messages,
    )


def plan_messages(
    signal_id: str, protocol: Protocol, targets: list[str], content: MailContent
) -> tuple[MessagePlan, ...]:
    """One message per distinct recipient of the targets (roles, addresses, webhooks)."""
    return messages_to(signal_id, resolve_targets(protocol, targets), content)


def messages_to(key: str, recipients: tuple[Recipient, ...], content: MailContent) -> tuple[MessagePlan, ...]:
    """Ids derive from what caused the message (a signal, a timer) and the recipient, so replays dedupe."""
    return tuple(
        MessagePlan(
            delivery_id=deterministic_id("delivery", key, r.address),
            recipient=r.address,
            content=content,
            channel=r.channel,
        )
        for r in recipients
    )


def update_needs_paging(previous: dict[str, object], data: SaeData) -> str | None:
    """A follow-up re-notifies only when it is worse (grade up, new criterion); else it is history only."""
    before_grade = previous.get("grade")
    if data.grade is not None and (not isinstance(before_grade, int) or data.grade > before_grade):
        return f"grade increased to {data.grade}"
    before = previous.get("criteria")
    before_criteria = set(before) if isinstance(before, list) else set()
    added = sorted(set(data.criteria) - before_criteria)
    if added:
        return "new seriousness criteria: " + ", ".join(added)
    return None
