"""Pure: a lab toxicity signal becomes an alert threaded per subject and term, with a review obligation.

The review clock starts when Sentinel received the result (`received_at`; the signal's time, which is the
collection time, from producers that predate it): a result entered days after it was drawn must still get
its full review time, and never arrives already overdue. With `lab_alerts.review_hours: null` the alert
notifies once and carries no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.notify.escalation import initial_targets
from services.notify.mail_content import MailContent, lab_mail, notice_mail, when
from services.notify.obligations import LAB_REVIEW, deadline
from services.notify.sae_alerts import AlertPlan, ObligationPlan, plan_messages
from shared.clock import utc
from shared.events import LabToxicity, LabToxicityData, LabToxicityWithdrawalData, deterministic_id
from shared.protocol import Protocol

LAB_KIND = "lab_toxicity"


def lab_thread_key(signal: LabToxicity) -> str:
    return lab_thread(signal.trialid, signal.data.subject_id, signal.data.term)


def lab_thread(trial_id: str, subject_id: str, term: str) -> str:
    return f"{LAB_KIND}:{trial_id}:{subject_id}:{term}"


def lab_alert_id(thread_key: str) -> str:
    """The thread's one alert, whichever signal opens it (a finding, or a withdrawal that overtook it)."""
    return deterministic_id("alert", thread_key)


def withdrawn_before(shown: Mapping[str, Any], data: LabToxicityWithdrawalData) -> bool:
    """Whether safety raised the withdrawal before the finding the alert shows (that one is numbered after the last
    it withdraws): then it is history. Against an unnumbered finding (opened before the numbering) it came after.
    Once shown, the findings it withdraws (`withdrawn_through`) are history if they come later (`raised_before`)."""
    number = shown.get("sequence")
    return isinstance(number, int) and data.sequence < number


def withdraws_another(shown: Mapping[str, Any], data: LabToxicityWithdrawalData) -> bool:
    """Whether a withdrawal of one result's finding (`withdrawn_result_id`: a vitals set, a lab result whose grade
    another result still carries, or one corrected within its grade) leaves the alert's finding alone: the alert shows
    another result (which paged, or paged since), or, against an unnumbered finding (vital signs), the one shown was
    received after the change that withdraws (the set corrected back since, delivered first by the other lane)."""
    result_id = data.withdrawn_result_id
    if result_id is None:
        return False
    if shown.get("result_id") != result_id:
        return True
    received = _instant(shown.get("received_at"))
    return shown.get("sequence") is None and received is not None and received > utc(data.received_at)


def withdrawn_title(data: LabToxicityWithdrawalData) -> str:
    where = f"(subject {data.subject_id}, site {data.site_id})"
    if data.standing_grade is None:
        return f"{data.term}: grade {data.withdrawn_grade} no longer stands {where}"
    return f"{data.term} grade {data.standing_grade} (grade {data.withdrawn_grade} no longer stands) {where}"


def lab_revised_mail(trial_id: str, data: LabToxicityWithdrawalData, *, vitals: bool = False) -> MailContent:
    """The one notice to whoever was paged when what a completed review assessed changed while a grade still stands
    (a value or time corrected, a grade that fell): the assessment recorded may rest on what no longer stands (a
    fever moved from the infusion day to day 3 points to infection, not to the infusion)."""
    finding = "Vital-sign finding" if vitals else "Lab finding"
    standing = data.standing_result
    rows = _change_rows(trial_id, data)
    if standing is not None:
        rows.append(("Now shown", f"grade {data.standing_grade}: {standing.value} {standing.unit or ''}".rstrip()))
        rows.append(("Measured", when(standing.collected_at)))
    rows.append(("Revised", f"{when(data.received_at)} (when Sentinel received the change)"))
    return notice_mail(
        subject=f"[{trial_id}] {finding} revised after its review: {data.term} grade {data.standing_grade}, "
        f"subject {data.subject_id}",
        heading=f"{data.term} grade {data.standing_grade} stands, but what its review assessed changed: {data.why}.",
        rows=rows,
        footer=(
            "The review recorded for it assessed a value or time that no longer stands: revise the AE or DLT "
            "assessment made from it if needed. No new review is owed and nobody else is paged."
        ),
    )


def lab_withdrawn_mail(
    trial_id: str, data: LabToxicityWithdrawalData, *, reviewed: bool = False, vitals: bool = False
) -> MailContent:
    """The one notice to whoever was paged about the finding: its review is no longer owed, or (`reviewed`) the review
    already recorded assessed a value that no longer stands. `vitals`: a finding graded from vital signs."""
    finding = "Vital-sign finding" if vitals else "Lab finding"
    if reviewed:
        footer = (
            "The review recorded for it assessed a value that no longer stands: revise the AE or DLT assessment made "
            "from it if needed. A new result of this term at or above the protocol's threshold pages again."
        )
        headline = f"{finding} withdrawn after its review"
    else:
        footer = (
            "Its review is no longer owed: no reminders or overdue pages will follow for it. A new result of this "
            "term at or above the protocol's threshold pages again."
        )
        headline = f"{finding} withdrawn, no review needed"
    return notice_mail(
        subject=f"[{trial_id}] {headline}: {data.term} grade {data.withdrawn_grade}, subject {data.subject_id}",
        heading=f"{data.term} grade {data.withdrawn_grade} no longer stands: {data.why}.",
        rows=[
            *_change_rows(trial_id, data),
            ("Withdrawn", f"{when(data.received_at)} (when Sentinel received the change)"),
        ],
        footer=footer,
    )


def _change_rows(trial_id: str, data: LabToxicityWithdrawalData) -> list[tuple[str, str]]:
    """What a notice of a withdrawal or revision says first: where, the finding paged, and what changed."""
    return [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("Finding paged", f"{data.term} grade {data.withdrawn_grade}"),
        ("What changed", data.why),
    ]


def raised_before(shown: Mapping[str, Any], data: LabToxicityData) -> bool:
    """Whether safety raised `data` before the signal the alert shows (`shown`, its details): then it is history,
    recorded without a page. Their order on the wire can differ: a result entered on its own takes the urgent lane,
    a backfill's the routine one (`shared.lanes`).

    Safety numbers a term's signals in the order it raised them (`sequence`): a lower number came before, a higher
    one is news, even when no worse than a grade shown (the worse results were taken back since: a labelling error).
    A numbered signal against an unnumbered one shown (an alert open when the numbering shipped) is news: safety has
    numbered every lab signal since, so it raised it after. Unnumbered signals (older producers, vital signs) are
    told by their grades: safety signals a term only when it is worse than what it signalled, and each signal says
    that grade (`previous_grade`), so a signal no worse than the shown one's previous grade came before it. Either
    way a result drawn after the shown one's is news."""
    withdrawn = shown.get("withdrawn_through")  # a withdrawal shown (`withdrawn_before`) covers these numbers
    if data.sequence is not None and isinstance(withdrawn, int) and data.sequence <= withdrawn:
        return True  # safety raised it, then took it into account when it withdrew: whenever it was drawn
    if data.sequence is None and _withdrawn_with_its_result(shown, data):
        return True
    if _drawn_after(data, shown.get("collected_at")):
        return False
    number = shown.get("sequence")
    if data.sequence is not None:
        return isinstance(number, int) and data.sequence < number
    previous = shown.get("previous_grade")
    return isinstance(previous, int) and data.grade <= previous


def _withdrawn_with_its_result(shown: Mapping[str, Any], data: LabToxicityData) -> bool:
    """An unnumbered finding (vital signs) of the result a withdrawal shown named, received no later than the change
    that withdrew it: raised before it (the withdrawal overtook it by the routine lane's turn)."""
    withdrawn_at = _instant(shown.get("withdrawn_received_at"))
    received = data.received_at
    return (
        shown.get("withdrawn_result_id") == data.result_id
        and withdrawn_at is not None
        and received is not None
        and utc(received) <= withdrawn_at
    )


def _instant(value: object) -> datetime | None:
    """A time kept in an alert's details (ISO text), in UTC; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _drawn_after(data: LabToxicityData, shown_at: object) -> bool:
    """A result drawn after the one the alert shows cannot be told from news by its grades alone: safety also raises a
    grade again after the worse results were taken back (a labelling error), with no previous grade, and that new
    episode must page. Taking a drawn-later result for news costs, at worst, one page for a lane swap whose backfill
    holds a newer (better) count; taking it for history would swallow a real worsening."""
    drawn = _instant(shown_at)
    return drawn is not None and utc(data.collected_at) > drawn


def grade_text(data: LabToxicityData) -> str:
    """ "grade 3", or "at least grade 3" when missing data could make it worse."""
    return f"{'at least ' if data.floor else ''}grade {data.grade}"


def plan_lab_alert(signal: LabToxicity, protocol: Protocol, *, live: bool = False) -> AlertPlan:
    """`live`: raised by a result that came on its own, not in a backfill (services.notify.urgency.LIVE_FINDING)."""
    data = signal.data
    thread_key = lab_thread_key(signal)
    alert_id = lab_alert_id(thread_key)
    hours = protocol.lab_alerts.review_hours
    obligation = None
    if hours is not None:
        started = utc(data.received_at or signal.time)
        obligation = ObligationPlan(
            id=deterministic_id("obligation", alert_id, LAB_REVIEW, signal.id),
            kind=LAB_REVIEW,
            description=f"Review the {data.term} {grade_text(data)} within {hours} h",
            clock_started_at=started,
            clock_basis="receipt" if data.received_at is not None else "signal",
            due_at=deadline(started, hours),
        )
    content = lab_mail(signal.trialid, data, due_at=obligation.due_at if obligation else None, hours=hours)
    targets = initial_targets(protocol, protocol.lab_alerts.notify_roles, escalates=obligation is not None)
    return AlertPlan(
        alert_id=alert_id,
        thread_key=thread_key,
        title=f"{data.term} {grade_text(data)} (subject {data.subject_id}, site {data.site_id})",
        details=data.model_dump(mode="json"),
        obligation=obligation,
        messages=plan_messages(signal.id, protocol, targets, content),
        live=live,
    )
