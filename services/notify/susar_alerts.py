"""Pure: what a SUSAR signal means in obligations: one expedited report per recipient the protocol names.

Clocks (calendar days from day 0, the sponsor's first awareness; ICH E2A III.A.2, EU CTR Art. 42(2),
21 CFR 312.32(c)):
- fatal or life-threatening: the report by day `fatal_days` (7) and its completion by `completion_days` (15);
- otherwise: the report by day `other_days` (15);
- it becomes fatal or life-threatening later (upgrade): an open report is due no later than 7 days after
  that knowledge (EU CTR Art. 42(2)(c)), a filed one needs a follow-up report by then; both get a completion
  due `completion_days` after the upgrade;
- new information on a filed report: a follow-up report due `follow_up_days` later (protocol option);
- day 0 (or the upgrade's 7-day start) turns out earlier than signalled (`clock_earlier`: a version received
  earlier was processed later): every open deadline moves to what the earlier knowledge makes it, overdue at
  once if that is already past; nothing moves later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.notify.escalation import initial_targets
from services.notify.mail_content import MailContent, notice_mail, when
from services.notify.sae_alerts import AlertPlan, ObligationPlan, plan_messages
from shared.clock import utc
from shared.events import SusarData, SusarDetected, SusarUpdated, SusarWithdrawn, deterministic_id
from shared.protocol import ExpeditedReporting, Protocol, ReportRecipient

SUSAR_KIND = "susar"
SUSAR_REPORT = "susar_report"
SUSAR_COMPLETION = "susar_completion"
SUSAR_FOLLOW_UP = "susar_follow_up"
SUSAR_OBLIGATIONS = frozenset({SUSAR_REPORT, SUSAR_COMPLETION, SUSAR_FOLLOW_UP})
LABELS = {
    SUSAR_REPORT: "SUSAR report",
    SUSAR_COMPLETION: "SUSAR completion report",
    SUSAR_FOLLOW_UP: "SUSAR follow-up report",
}
SusarSignal = SusarDetected | SusarUpdated | SusarWithdrawn


def susar_thread_key(trial_id: str, data: SusarData) -> str:
    return f"{SUSAR_KIND}:{trial_id}:{data.subject_id}:{data.ae_id}"


def susar_alert_id(trial_id: str, data: SusarData) -> str:
    return deterministic_id("alert", susar_thread_key(trial_id, data))


def rules_of(protocol: Protocol) -> ExpeditedReporting:
    if protocol.expedited_reporting is None:
        raise ValueError(f"protocol {protocol.trial_id} names no expedited_reporting recipients")
    return protocol.expedited_reporting


def days_after(start: datetime, days: int, zone: str | None = None) -> datetime:
    """Calendar days, to the instant: day 0 at 14:00 makes day 7 at 14:00 (never rounded later).

    `zone`: the sponsor's time zone (the protocol's `expedited_reporting.time_zone`), where calendar days are
    counted: the same wall-clock time that many days later there, so across a clock change the deadline stays on
    its calendar day (a 24 h day would move it an hour into the next). A wall-clock time the change skips or
    repeats is taken at its earlier instant. Without a zone, days of 24 h (UTC has no clock change)."""
    if zone is None:
        return utc(start) + timedelta(days=days)
    local = utc(start).astimezone(ZoneInfo(zone))
    wall = local.replace(tzinfo=None) + timedelta(days=days)
    return min(utc(wall.replace(tzinfo=local.tzinfo, fold=fold)) for fold in (0, 1))


def report_obligation_id(alert_id: str, kind: str, recipient_id: str, clock_start: datetime) -> str:
    """One id per (kind, recipient, clock): a re-detection after a withdrawal starts new obligations."""
    return deterministic_id("obligation", alert_id, kind, recipient_id, utc(clock_start).isoformat())


def follow_up_obligation_id(alert_id: str, recipient_id: str, source_id: str) -> str:
    return deterministic_id("obligation", alert_id, SUSAR_FOLLOW_UP, recipient_id, source_id)


def recipient_of(description: str) -> str:
    """The recipient id a SUSAR obligation's description starts with ("[regulator] SUSAR report to ...")."""
    return description[1 : description.index("]")] if description.startswith("[") else ""


def _to(recipient: ReportRecipient) -> str:
    route = f" via {recipient.route}" if recipient.route else ""
    return f"{recipient.name} ({recipient.kind.replace('_', ' ')}){route}"


def _obligation(
    id_: str, kind: str, recipient: ReportRecipient, *, days: int, start: datetime, basis: str, due_at: datetime
) -> ObligationPlan:
    return ObligationPlan(
        id=id_,
        kind=kind,
        description=f"[{recipient.id}] {LABELS[kind]} to {_to(recipient)}: day {days}"[:500],
        clock_started_at=utc(start),
        clock_basis=basis[:20],
        due_at=due_at,
    )


def report_due(data: SusarData, rules: ExpeditedReporting) -> datetime:
    """The initial report's deadline for the case as signalled: 7 days from day 0 when fatal or life-threatening
    from the start; else 15 days, or 7 days from the upgrade when that comes first."""
    if not data.fatal_or_life_threatening:
        return days_after(data.clock_start, rules.other_days, rules.time_zone)
    if data.upgraded_at is None:
        return days_after(data.clock_start, rules.fatal_days, rules.time_zone)
    return min(
        days_after(data.clock_start, rules.other_days, rules.time_zone),
        days_after(data.upgraded_at, rules.fatal_days, rules.time_zone),
    )


def fatal_known(data: SusarData) -> datetime:
    """When the sponsor knew the case fatal or life-threatening: the completion report's clock starts there."""
    return data.upgraded_at or data.clock_start


def initial_obligations(
    trial_id: str, data: SusarData, rules: ExpeditedReporting, *, filed: frozenset[str] = frozenset()
) -> list[ObligationPlan]:
    """A new SUSAR: per recipient, the report (7 or 15 days), and for a fatal one the completion (15 days from
    when that was known).

    `filed`: recipients who already hold an initial report of this case (it was withdrawn, then qualified
    again): theirs is a follow-up report, on the same timeline (ICH E2A III.B), when the protocol tracks
    follow-ups; a second initial report would make two cases of one."""
    alert_id = susar_alert_id(trial_id, data)
    start = data.clock_start
    plans: list[ObligationPlan] = []
    for r in rules.recipients:
        due = report_due(data, rules)
        days = rules.fatal_days if data.fatal_or_life_threatening else rules.other_days
        if r.id in filed and rules.follow_up_reports:
            plans.append(_follow_up(alert_id, r, data, days=days, start=start, basis="follow_up", due_at=due))
            continue
        plans.append(
            _obligation(
                report_obligation_id(alert_id, SUSAR_REPORT, r.id, start),
                SUSAR_REPORT,
                r,
                days=days,
                start=start,
                basis="sponsor_awareness",
                due_at=due,
            )
        )
        if data.fatal_or_life_threatening:
            plans.append(_completion(alert_id, r, data, rules))
    return plans


def _follow_up(
    alert_id: str, r: ReportRecipient, data: SusarData, *, days: int, start: datetime, basis: str, due_at: datetime
) -> ObligationPlan:
    """A follow-up report to a recipient who holds the case already, one per signal that brings it."""
    follow_up_id = follow_up_obligation_id(alert_id, r.id, data.source_event_id)
    return _obligation(follow_up_id, SUSAR_FOLLOW_UP, r, days=days, start=start, basis=basis, due_at=due_at)


def _completion(alert_id: str, r: ReportRecipient, data: SusarData, rules: ExpeditedReporting) -> ObligationPlan:
    known = fatal_known(data)
    return _obligation(
        report_obligation_id(alert_id, SUSAR_COMPLETION, r.id, known),
        SUSAR_COMPLETION,
        r,
        days=rules.completion_days,
        start=known,
        basis="upgrade" if data.upgraded_at else "sponsor_awareness",
        due_at=days_after(known, rules.completion_days, rules.time_zone),
    )


@dataclass(frozen=True)
class ReportState:
    """One recipient's initial report obligation as notify holds it."""

    recipient: ReportRecipient
    obligation_id: str
    state: str
    due_at: datetime


@dataclass(frozen=True)
class UpgradePlan:
    move: tuple[tuple[str, datetime], ...]
    """(open report obligation id, its new, earlier deadline)"""
    add: tuple[ObligationPlan, ...]


def plan_upgrade(trial_id: str, data: SusarData, rules: ExpeditedReporting, reports: list[ReportState]) -> UpgradePlan:
    """Now fatal or life-threatening: 7 days from that knowledge for the report (or a follow-up if filed)."""
    alert_id = susar_alert_id(trial_id, data)
    known = data.upgraded_at or data.changed_at
    due7 = days_after(known, rules.fatal_days, rules.time_zone)
    move: list[tuple[str, datetime]] = []
    add: list[ObligationPlan] = []
    by_recipient = {report.recipient.id: report for report in reports}
    for r in rules.recipients:
        report = by_recipient.get(r.id)
        if report is not None and report.state in ("open", "overdue"):
            if due7 < report.due_at:
                move.append((report.obligation_id, due7))
        else:
            add.append(_follow_up(alert_id, r, data, days=rules.fatal_days, start=known, basis="upgrade", due_at=due7))
        add.append(
            _obligation(
                report_obligation_id(alert_id, SUSAR_COMPLETION, r.id, known),
                SUSAR_COMPLETION,
                r,
                days=rules.completion_days,
                start=known,
                basis="upgrade",
                due_at=days_after(known, rules.completion_days, rules.time_zone),
            )
        )
    return UpgradePlan(tuple(move), tuple(add))


@dataclass(frozen=True)
class EarlierClockPlan:
    move: tuple[tuple[str, datetime, datetime], ...]
    """(open obligation id, its new, earlier deadline, the clock start it now counts from)"""
    restart: tuple[tuple[str, datetime], ...]
    """(open obligation id, its earlier clock start): the deadline stands (another rule bounds it already)"""
    add: tuple[ObligationPlan, ...]


def plan_earlier_clock(
    trial_id: str,
    data: SusarData,
    rules: ExpeditedReporting,
    reports: list[ReportState],
    completions: list[ReportState],
) -> EarlierClockPlan:
    """Day 0, or the 7-day start, is earlier than notify held: each recipient's open report and completion take
    the deadline the earlier knowledge gives (never a later one). What notify did not hold yet is added: a
    completion when the case is fatal or life-threatening, and for a report filed before that was known, a
    follow-up due 7 days from the knowledge (as for an upgrade)."""
    alert_id = susar_alert_id(trial_id, data)
    due = report_due(data, rules)
    move: list[tuple[str, datetime, datetime]] = []
    restart: list[tuple[str, datetime]] = []
    add: list[ObligationPlan] = []
    report_of = {report.recipient.id: report for report in reports}
    completion_of = {completion.recipient.id: completion for completion in completions}
    known = fatal_known(data)
    for r in rules.recipients:
        report = report_of.get(r.id)
        if report is None:
            add.append(
                next(p for p in initial_obligations(trial_id, data, rules) if p.kind == SUSAR_REPORT and _for(p, r))
            )
        elif report.state in ("open", "overdue"):
            if due < report.due_at:
                move.append((report.obligation_id, due, utc(data.clock_start)))
            else:
                restart.append((report.obligation_id, utc(data.clock_start)))
        elif data.fatal_or_life_threatening and r.id not in completion_of:
            due7 = days_after(known, rules.fatal_days, rules.time_zone)
            add.append(_follow_up(alert_id, r, data, days=rules.fatal_days, start=known, basis="upgrade", due_at=due7))
        if not data.fatal_or_life_threatening:
            continue
        completion = completion_of.get(r.id)
        complete_by = days_after(known, rules.completion_days, rules.time_zone)
        if completion is None:
            add.append(_completion(alert_id, r, data, rules))
        elif completion.state in ("open", "overdue") and complete_by < completion.due_at:
            move.append((completion.obligation_id, complete_by, utc(known)))
    return EarlierClockPlan(tuple(move), tuple(restart), tuple(add))


def _for(plan: ObligationPlan, recipient: ReportRecipient) -> bool:
    return recipient_of(plan.description) == recipient.id


def plan_follow_ups(
    trial_id: str, data: SusarData, rules: ExpeditedReporting, reports: list[ReportState], *, pending: set[str]
) -> list[ObligationPlan]:
    """New information: a follow-up for each recipient whose report is filed and has no follow-up pending
    (an open report will carry the information itself)."""
    if not rules.follow_up_reports:
        return []
    alert_id = susar_alert_id(trial_id, data)
    filed = {report.recipient.id for report in reports if report.state == "completed"}
    due = days_after(data.changed_at, rules.follow_up_days, rules.time_zone)
    return [
        _follow_up(alert_id, r, data, days=rules.follow_up_days, start=data.changed_at, basis="follow_up", due_at=due)
        for r in rules.recipients
        if r.id in filed and r.id not in pending
    ]


def susar_mail(trial_id: str, data: SusarData, *, heading: str, obligations: list[ObligationPlan]) -> MailContent:
    rows = [
        ("Trial", trial_id),
        ("Subject", f"{data.subject_id} (site {data.site_id})"),
        ("Event", f"{data.term} (AE {data.ae_id}, version {data.ae_version}, grade {data.grade or 'not given'})"),
        ("MedDRA", data.meddra_code or "not coded"),
        ("Seriousness", ", ".join(c.replace("_", " ") for c in data.criteria) or "none"),
        ("Assessment", data.reason),
        ("Expectedness", f"{data.expectedness} ({data.expectedness_basis.replace('_', ' ')}, RSI v{data.rsi_version})"),
        ("Day 0", f"{when(data.clock_start)}: {data.clock_basis}"),
    ]
    rows += [(LABELS[o.kind], f"due {when(o.due_at)}: {o.description}") for o in obligations]
    return notice_mail(
        subject=f"[{trial_id}] {heading}: {data.term} (subject {data.subject_id})",
        heading=heading,
        rows=rows,
        footer="Each recipient's report is its own obligation: record each submission's reference to close it.",
    )


def susar_withdrawn_mail(trial_id: str, data: SusarData, *, cancelled: int, filed: Sequence[str]) -> MailContent:
    """What the people paged for a SUSAR read when it no longer qualifies (the site took the AE back, causality or
    expectedness changed): which reports are no longer due and, for any already submitted, that its recipient
    holds a case that no longer stands (a follow-up or nullification, ICH E2B(R3) C.1.11, may be needed)."""
    rows = [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("Event", f"{data.term} (AE {data.ae_id}, version {data.ae_version})"),
        ("Why", data.reason),
        ("Reports no longer due", str(cancelled) if cancelled else "none open"),
    ]
    if filed:
        rows.append(("Reports already submitted", "; ".join(filed)))
        return notice_mail(
            subject=f"[{trial_id}] SUSAR withdrawn after reports were submitted: {data.term} (subject "
            f"{data.subject_id})",
            heading=f"No longer a SUSAR: {data.reason}.",
            rows=rows,
            footer="The submitted reports stay on record. Their recipients hold a case that no longer stands: a "
            "follow-up or nullification report (ICH E2B(R3) C.1.11) to each may be needed. Reports not yet "
            "submitted are no longer due.",
        )
    return notice_mail(
        subject=f"[{trial_id}] SUSAR withdrawn, expedited reports no longer due: {data.term} (subject "
        f"{data.subject_id})",
        heading=f"No longer a SUSAR: {data.reason}.",
        rows=rows,
        footer="You need not submit the expedited reports for it: their clocks, reminders and escalation are "
        "stopped. If the case qualifies again, you will be paged again.",
    )


def plan_susar_alert(
    signal: SusarSignal, protocol: Protocol, *, heading: str, obligations: list[ObligationPlan]
) -> AlertPlan:
    """The alert that threads every signal of one case; its obligations are added one by one by the caller."""
    data = signal.data
    rules = rules_of(protocol)
    content = susar_mail(signal.trialid, data, heading=heading, obligations=obligations)
    targets = initial_targets(protocol, rules.notify_roles, escalates=True)
    return AlertPlan(
        alert_id=susar_alert_id(signal.trialid, data),
        thread_key=susar_thread_key(signal.trialid, data),
        title=f"SUSAR: {data.term} (subject {data.subject_id}, site {data.site_id})"[:500],
        details=data.model_dump(mode="json"),
        obligation=None,
        messages=plan_messages(signal.id, protocol, targets, content),
    )
