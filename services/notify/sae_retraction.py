"""Pure: what an SAE the site took back (or restored) means for its report obligation and for the people paged.

Withdrawn (`sae.withdrawn`: the site marked the AE entered in error or deleted):
- an open report obligation is cancelled, with why, and its clock stops; nothing is deleted;
- a report already filed stays filed, and the notice says a nullification (ICH E2B(R3) C.1.11) or a follow-up to
  its recipients may be needed: the sponsor must know a filed case was retracted;
- an officer's own cancellation stands;
- whoever was (or may have been) paged gets one notice that the SAE was withdrawn; pages not yet handed to a
  channel are not sent at all.
Restored (`sae.detected` for an alert whose SAE was withdrawn):
- the obligation the withdrawal cancelled is open again with its original deadline (or an earlier one the restore
  shows), overdue at once if that has passed; a filed report stands; an officer's cancellation stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.notify.escalation import Channel, Recipient
from services.notify.mail_content import MailContent, notice_mail, when
from shared.clock import utc
from shared.events import AcuteReactionWithdrawalData, SaeData, SaeWithdrawalData

SYSTEM = "system"
WITHDRAWN = "sae_withdrawn"
RESTORED = "sae_restored"
RETRACTION_ACTIONS = (WITHDRAWN, RESTORED)
"""The alert-history actions that say whether the SAE stands withdrawn (the latest one of them)."""

ObligationFate = Literal["cancel", "filed", "officer_closed", "withdrawn_already"]
RestoreFate = Literal["reopen", "filed", "officer_closed", "open"]


@dataclass(frozen=True)
class HeldObligation:
    """An SAE report obligation as notify holds it."""

    id: str
    state: str
    """open | overdue | completed | cancelled"""
    cancelled_by: str | None
    reference: str | None
    due_at: datetime


@dataclass(frozen=True)
class Withdrawal:
    cancel: tuple[str, ...]
    """Obligation ids to cancel (open or overdue ones)."""
    filed: tuple[str, ...]
    """References of reports already filed: a nullification or follow-up may be needed."""
    standing: tuple[str, ...]
    """Obligation ids an officer closed (cancelled) or a withdrawal already cancelled: left as they are."""

    @property
    def changes_anything(self) -> bool:
        return bool(self.cancel or self.filed)


def plan_withdrawal(obligations: Iterable[HeldObligation]) -> Withdrawal:
    cancel, filed, standing = [], [], []
    for o in obligations:
        fate = withdrawal_fate(o)
        if fate == "cancel":
            cancel.append(o.id)
        elif fate == "filed":
            filed.append(o.reference or o.id)
        else:
            standing.append(o.id)
    return Withdrawal(tuple(cancel), tuple(filed), tuple(standing))


def withdrawal_fate(o: HeldObligation) -> ObligationFate:
    if o.state in ("open", "overdue"):
        return "cancel"
    if o.state == "completed":
        return "filed"
    return "withdrawn_already" if o.cancelled_by == SYSTEM else "officer_closed"


def restore_fate(o: HeldObligation) -> RestoreFate:
    """A system cancellation of an SAE report is a withdrawal's (the only one notify makes): reopened. An officer's
    cancellation or a filed report stands."""
    if o.state in ("open", "overdue"):
        return "open"
    if o.state == "completed":
        return "filed"
    return "reopen" if o.cancelled_by == SYSTEM else "officer_closed"


def restored_deadline(held_due_at: datetime, signalled_due_at: datetime) -> datetime:
    """The original deadline, or an earlier one when a version processed while withdrawn showed earlier
    awareness; never later (restoring does not restart the clock)."""
    return min(utc(held_due_at), utc(signalled_due_at))


def stands_withdrawn(actions: Sequence[str]) -> bool:
    """Whether the alert's SAE is withdrawn now: its latest withdrawal or restore (history order) says so."""
    latest = [a for a in actions if a in RETRACTION_ACTIONS]
    return bool(latest) and latest[-1] == WITHDRAWN


@dataclass(frozen=True)
class SentMessage:
    recipient: str
    channel: Channel
    status: str
    """pending | sent | failed | cancelled"""
    attempt_started: bool
    """An attempt was handed over and its outcome never recorded: the mail may have gone out."""
    leased: bool
    """A sender is handing it over right now."""


def possibly_received(m: SentMessage) -> bool:
    """Sent, being sent, or handed over by a sender that stopped before recording it (the mail may be there)."""
    return m.status == "sent" or m.attempt_started or m.leased


def paged_recipients(messages: Iterable[SentMessage]) -> tuple[Recipient, ...]:
    """Who heard of the SAE (or may have): they, and only they, hear that it was withdrawn."""
    return tuple(sorted({Recipient(m.channel, m.recipient) for m in messages if possibly_received(m)}))


def retraction_words(data: SaeWithdrawalData | AcuteReactionWithdrawalData) -> str:
    """'the site marked AE AE-7 entered in error (duplicate of AE-3)'."""
    why = f" ({data.reason})" if data.reason else ""
    return f"the site marked AE {data.ae_id} {data.status.replace('_', ' ')}{why}"


def cancel_reason(data: SaeWithdrawalData) -> str:
    return f"SAE withdrawn: {retraction_words(data)}; no SAE report is needed for it"[:2000]


def withdrawn_mail(trial_id: str, data: SaeWithdrawalData, *, filed: Sequence[str], due_at: datetime) -> MailContent:
    rows = [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("Event", f"{data.term} (AE {data.ae_id}, version {data.ae_version})"),
        ("Site's status", f"{data.status.replace('_', ' ')}, {when(data.changed_at)}"),
        ("Site's reason", data.reason or "not given"),
        ("Clock", f"started {when(data.awareness_at)}; report was due {when(due_at)}"),
    ]
    if filed:
        rows.append(("Report filed", ", ".join(filed)))
        return notice_mail(
            subject=f"[{trial_id}] SAE withdrawn after its report was filed: {data.term}, subject {data.subject_id}",
            heading=f"SAE withdrawn after its report was filed: {retraction_words(data)}.",
            rows=rows,
            footer="The filed report stays on record. A nullification report (ICH E2B(R3)) or a follow-up to its "
            "recipients may be needed; no further SAE pages will be sent for this AE unless the site restores it.",
        )
    return notice_mail(
        subject=f"[{trial_id}] SAE withdrawn, no report needed: {data.term}, subject {data.subject_id}",
        heading=f"SAE withdrawn: {retraction_words(data)}.",
        rows=rows,
        footer="You need not file an SAE report for it: its 24 h clock, reminders and escalation are stopped. If the "
        "site restores the AE, the report is due again by its original deadline.",
    )


def restored_reason(data: SaeData, *, due_at: datetime, now: datetime, filed: Sequence[str]) -> str:
    """The words of the page a restore sends."""
    restored = f"the site restored AE {data.ae_id}"
    if filed:
        return (
            f"{restored}; the report filed as {', '.join(filed)} stands (if a nullification was sent, report it again)"
        )
    if utc(due_at) <= utc(now):
        return f"{restored}; the SAE report is OVERDUE (due {when(due_at)}, from the original awareness)"
    return f"{restored}; the SAE report is due again by {when(due_at)} (the original deadline)"
