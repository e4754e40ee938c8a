"""Pure: the words of an SAE mail, in plain text and HTML, naming everything a safety officer needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from shared.clock import utc
from shared.events import (
    AssessmentMissedData,
    CohortData,
    DltData,
    DltDecisionData,
    DoseRecommendationData,
    LabToxicityData,
    ProtocolDeviationData,
    SaeData,
)

ACK_FOOTER = "Acknowledge the alert to stop paging; only recording the filed report closes the reporting obligation."


@dataclass(frozen=True)
class MailContent:
    subject: str
    text: str
    html: str


def _when(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def sae_mail(
    trial_id: str,
    data: SaeData,
    *,
    due_at: datetime,
    hours: int,
    reason: str,
    overdue: bool = False,
    restored: bool = False,
) -> MailContent:
    """The SAE page. Its subject says at a glance when the report is already overdue (a late report, a restore after
    the deadline) and when the site restored an AE it had taken back: a date in the past alone reads as a typo."""
    criteria = ", ".join(c.replace("_", " ") for c in data.criteria)
    basis = "site awareness" if data.awareness_basis.value == "site" else "receipt (the site gave no awareness time)"
    if data.clock_from_ae_id is not None:  # a re-entry keeps the clock of the AE the site took back
        basis = f"{basis} of AE {data.clock_from_ae_id}, which the site took back and re-entered as this AE"
    rows = [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("Event", f"{data.term} (AE {data.ae_id}, version {data.ae_version})"),
        ("CTCAE grade", str(data.grade) if data.grade is not None else "not given"),
        ("Seriousness", criteria),
        ("Relatedness", data.relatedness.value.replace("_", " ") if data.relatedness else "not given"),
        ("Outcome", data.outcome or "not given"),
        ("Clock started", f"{_when(data.awareness_at)} ({basis})"),
        ("Report due", f"{_when(due_at)} ({hours} h)"),
    ]
    marks = [m for m, on in (("OVERDUE", overdue), ("AE restored by the site", restored)) if on]
    mark = f" ({'; '.join(marks)})" if marks else ""
    subject = f"[{trial_id}] SAE report due {_when(due_at)}{mark}: {data.term}, subject {data.subject_id}"
    text = "\n".join(
        [
            f"Serious adverse event — {reason}.",
            "",
            *_lines(rows),
            "",
            ACK_FOOTER,
        ]
    )
    html = (
        f"<html><body><h2>Serious adverse event — {escape(reason)}</h2>"
        f"{_table(rows)}"
        "<p>Acknowledge the alert to stop paging; only recording the filed report closes the reporting "
        "obligation.</p></body></html>"
    )
    return MailContent(subject=subject, text=text, html=html)


def lab_mail(
    trial_id: str, data: LabToxicityData, *, due_at: datetime | None = None, hours: int | None = None
) -> MailContent:
    """A floor grade reads "at least grade N" everywhere; with a review clock, the mail says when it is due."""
    baseline = f"grade {data.baseline_grade}" if data.baseline_grade is not None else "no baseline result"
    previous = f"grade {data.previous_grade}" if data.previous_grade is not None else "none"
    grade = f"at least {data.grade}" if data.floor else str(data.grade)
    graded = f"{'at least ' if data.floor else ''}grade {data.grade}"
    vitals = data.measured_by == "vitals"
    rows = [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("CTCAE term", data.term),
        ("Grade", grade),
        ("Vital sign" if vitals else "Result", f"{data.test} = {data.value} {data.unit or ''}".rstrip()),
        ("Measured" if vitals else "Collected", _when(data.collected_at)),
        *([] if vitals else [("Baseline", baseline)]),
        ("Previously signalled" if not vitals else "Worst nearby reading", previous),
        ("Grading", data.reason),
    ]
    if due_at is not None:
        rows.append(("Review due", f"{_when(due_at)} ({hours} h)"))
    due = f", review due {_when(due_at)}" if due_at is not None else ""
    subject = f"[{trial_id}] {data.term} {graded}{due}, subject {data.subject_id}"
    heading = (
        f"Vital-sign finding: {data.term} {graded}."
        if vitals
        else f"Lab toxicity worse than baseline: {data.term} {graded}."
    )
    footer = (
        "Acknowledge the alert to stop paging; only recording the review closes the obligation."
        if due_at is not None
        else None
    )
    tail = [footer] if footer else []
    text = "\n".join([heading, "", *_lines(rows), *(["", *tail] if tail else [])])
    html = (
        f"<html><body><h2>{'Vital-sign finding' if vitals else 'Lab toxicity'}: {escape(data.term)} "
        f"{escape(graded)}</h2>{_table(rows)}" + (f"<p>{escape(footer)}</p>" if footer else "") + "</body></html>"
    )
    return MailContent(subject=subject, text=text, html=html)


def notice_mail(*, subject: str, heading: str, rows: list[tuple[str, str]], footer: str | None = None) -> MailContent:
    """The shape every other message shares: a heading, the facts as label/value rows, an optional footer."""
    text = "\n".join([heading, "", *_lines(rows), *(["", footer] if footer else [])])
    tail = f"<p>{escape(footer)}</p>" if footer else ""
    html = f"<html><body><h2>{escape(heading)}</h2>{_table(rows)}{tail}</body></html>"
    return MailContent(subject=subject, text=text, html=html)


def when(moment: datetime) -> str:
    return _when(moment)


def _dlt_rows(trial_id: str, data: DltData) -> list[tuple[str, str]]:
    window = (
        f"{_when(data.window_start)} to {_when(data.window_end)}" if data.window_start and data.window_end else "n/a"
    )
    return [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("Arm", data.arm or "not known"),
        ("Event", f"{data.term} (AE {data.ae_id}, version {data.ae_version})"),
        ("CTCAE grade", str(data.grade) if data.grade is not None else "not given"),
        ("Relatedness", data.relatedness.value.replace("_", " ") if data.relatedness else "not given"),
        ("Criterion", data.criterion),
        ("DLT window", window),
        ("Why", data.reason),
    ]


def dlt_suspected_mail(trial_id: str, data: DltData, *, due_at: datetime, hours: int, reason: str) -> MailContent:
    return notice_mail(
        subject=f"[{trial_id}] Suspected DLT, review due {_when(due_at)}: {data.term}, subject {data.subject_id}",
        heading=f"Suspected dose-limiting toxicity — {reason}.",
        rows=[*_dlt_rows(trial_id, data), ("Review due", f"{_when(due_at)} ({hours} h)")],
        footer="Confirm or reject the DLT in safety; acknowledging the alert stops paging, not the review clock.",
    )


def dlt_withdrawn_mail(trial_id: str, data: DltData) -> MailContent:
    return notice_mail(
        subject=f"[{trial_id}] Suspected DLT withdrawn: {data.term}, subject {data.subject_id}",
        heading=f"Suspected DLT withdrawn, its review cancelled: {data.reason}.",
        rows=_dlt_rows(trial_id, data),
        footer="As a suspicion it no longer counts in the arm's 3+3 tally (a confirmation that stands again counts "
        "as confirmed: see above). If later data meet a DLT criterion again, it is "
        "suspected (and paged) again.",
    )


def dlt_revised_mail(trial_id: str, data: DltDecisionData) -> MailContent:
    """A decided DLT reversed: the people told of the suspicion took the first decision as the end of it."""
    return notice_mail(
        subject=f"[{trial_id}] DLT decision revised: {data.revises} -> {data.decision}, subject {data.subject_id}",
        heading=f"A DLT decision was revised: {data.revises} -> {data.decision}, by {data.decided_by}.",
        rows=[
            ("Trial", trial_id),
            ("Subject", data.subject_id),
            ("Arm", data.arm or "not known"),
            ("DLT", data.dlt_id),
            ("Earlier decision", data.revises or "none"),
            ("Decision now", data.decision),
            ("Revised by", f"{data.decided_by}, {_when(data.decided_at)}"),
            ("Why", data.reason),
        ],
        footer="The arm's 3+3 was reassessed at once: a changed cohort decision is sent separately. The DLT's "
        "alert keeps both decisions in its history.",
    )


def cohort_rows(trial_id: str, data: CohortData) -> list[tuple[str, str]]:
    return [
        ("Trial", trial_id),
        ("Arm", data.arm),
        ("Decision", data.decision),
        ("Previous decision", data.previous_decision or "none"),
        ("Next arm", data.next_arm or "none"),
        ("Enrolled / evaluable", f"{data.enrolled} / {data.evaluable}"),
        ("DLTs confirmed / suspected", f"{data.dlt_confirmed} / {data.dlt_suspected}"),
        ("Not evaluable / replacements needed", f"{data.not_evaluable} / {data.replacements_needed}"),
        ("Why", data.reason),
    ]


def stopping_rule_mail(trial_id: str, data: CohortData, *, due_at: datetime, hours: int) -> MailContent:
    return notice_mail(
        subject=f"[{trial_id}] Stopping rule fired in arm {data.arm}: review due {_when(due_at)}",
        heading=f"The protocol's stopping rule fired in arm {data.arm}: escalation stops pending review.",
        rows=[*cohort_rows(trial_id, data), ("Review due", f"{_when(due_at)} ({hours} h)")],
        footer="Acknowledging the alert stops paging; only recording the review closes the obligation.",
    )


def cohort_mail(trial_id: str, data: CohortData) -> MailContent:
    return notice_mail(
        subject=f"[{trial_id}] Cohort decision for arm {data.arm}: {data.decision}",
        heading=f"Arm {data.arm}: {data.previous_decision or 'no decision'} -> {data.decision}.",
        rows=cohort_rows(trial_id, data),
    )


def assessment_missed_mail(trial_id: str, data: AssessmentMissedData) -> MailContent:
    return notice_mail(
        subject=f"[{trial_id}] Missed assessment '{data.assessment}', subject {data.subject_id}",
        heading=f"The '{data.assessment}' assessment was not recorded within its window.",
        rows=[
            ("Trial", trial_id),
            ("Site", data.site_id),
            ("Subject", data.subject_id),
            ("Window", f"{_when(data.due_from)} to {_when(data.due_until)}"),
            ("Missing", ", ".join(data.missing) or "not stated"),
        ],
    )


def dose_recommendation_mail(
    trial_id: str, data: DoseRecommendationData, *, due_at: datetime, hours: int
) -> MailContent:
    if data.recommended_arm is not None:
        what = f"Recommended dose: arm {data.recommended_arm}"
        heading = f"The 3+3 rule recommends arm {data.recommended_arm} ({data.basis.replace('_', ' ')})."
    elif data.basis == "withdrawn":
        what = f"Recommended dose withdrawn (was arm {data.previous_arm})"
        heading = f"The recommendation of arm {data.previous_arm} no longer holds."
    else:
        what = "No tolerated dose"
        heading = "The 3+3 rule found no tolerated arm."
    rows = [
        ("Trial", trial_id),
        ("Recommended arm", data.recommended_arm or "none"),
        ("Basis", data.basis.replace("_", " ")),
        ("Previous recommendation", data.previous_arm or "none"),
        ("Why", data.reason),
        *[
            (f"Arm {a.arm}", f"{a.decision}: {a.dlt_confirmed} DLT(s), {a.evaluable}/{a.enrolled} evaluable")
            for a in data.arms
        ],
        ("Review due", f"{_when(due_at)} ({hours} h)"),
    ]
    return notice_mail(
        subject=f"[{trial_id}] {what}: committee review due {_when(due_at)}",
        heading=heading,
        rows=rows,
        footer="The safety review committee must review the recommendation; acknowledging stops paging.",
    )


_ENROLMENT_RISK = "A subject was enrolled where the 3+3 rule does not allow it"
_DEVIATION_RISK = {
    "dosed_while_ineligible": "A subject was dosed while not eligible",
    "screening_data_missing": "A subject was dosed with screening data missing: eligibility is not established",
    "dose_out_of_tolerance": "A subject received more cells/kg than the protocol allows",
    "extra_infusion": "A subject received more infusions than the arm plans",
    "lot_not_released": "A subject was dosed from a lot without release results",
    "lot_release_failed": "A subject was dosed from a lot that failed release",
}


def deviation_mail(trial_id: str, data: ProtocolDeviationData) -> MailContent:
    urgent = "URGENT " if data.pages else ""
    return notice_mail(
        subject=f"[{trial_id}] {urgent}Protocol deviation ({data.kind}), subject {data.subject_id}",
        heading=f"Protocol deviation: {data.kind}."
        + (f" {_DEVIATION_RISK.get(data.kind, _ENROLMENT_RISK)}: review now." if data.pages else ""),
        rows=[
            ("Trial", trial_id),
            ("Site", data.site_id),
            ("Subject", data.subject_id),
            ("Arm", data.arm or "not known"),
            ("Detail", data.detail),
        ],
    )


def _lines(rows: list[tuple[str, str]]) -> list[str]:
    return [f"{label}: {value}" for label, value in rows]


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


@dataclass(frozen=True)
class ObligationLine:
    label: str
    due_at: datetime
    state: str


def timed_mail(
    *,
    trial_id: str,
    alert_id: str,
    alert_title: str,
    subject: str,
    heading: str,
    obligations: list[ObligationLine],
    footer: str = ACK_FOOTER,
) -> MailContent:
    """Reminders, overdue and escalation pages: what the alert is, what is due when, and what stops it."""
    rows = [("Trial", trial_id), ("Alert", alert_title), ("Alert id", alert_id)]
    rows += [(o.label, f"due {_when(o.due_at)} ({o.state})") for o in obligations]
    return notice_mail(subject=f"[{trial_id}] {subject}: {alert_title}", heading=heading, rows=rows, footer=footer)


def console_link(console_url: str, alert_id: str) -> str:
    """The alert's page in the officer console, where it is acknowledged, snoozed and completed."""
    return f"{console_url.rstrip('/')}/console/alerts/{alert_id}"


def with_console_link(*, text: str, html: str, link: str) -> tuple[str, str]:
    """The same message with the link to its alert's page, once (adding it again changes nothing)."""
    if link in text:
        return text, html
    anchor = f'<p><a href="{escape(link)}">Open this alert in the console</a> ({escape(link)})</p>'
    head, found, tail = html.rpartition("</body>")
    html = f"{head}{anchor}{found}{tail}" if found else f"{html}{anchor}"
    return f"{text}\n\nOpen this alert in the console: {link}\n", html


def duration_text(delta: timedelta) -> str:
    """A duration as people say it: '4 h', '1 h 30 min', '45 min', '2 d 3 h'; under a minute: '<1 min'."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{mins} min" if mins and not days else ""]
    text = " ".join(p for p in parts if p) or "<1 min"
    return f"-{text}" if delta < timedelta(0) else text
