"""Notify's service layer for a lab finding that no longer stands (`lab.toxicity_withdrawn`).

Nothing of it stands (its results taken back, corrected, or no worse than a baseline that came later): the term's
open review is cancelled with why, escalation and failover stop, pages not yet handed over are not sent, and whoever
was paged hears once that no review is owed (an acute reaction's withdrawal, `acute_retraction_signals`), or, when
the review was completed, that the assessment recorded rests on a value that no longer stands. Before,
the review stayed open and escalated for a result the site had taken back. A lower grade still stands: the alert
shows it and keeps its review, and nobody is paged for a better result. The grade stands by another result (the one
that paged taken back): the alert shows the result that stands, its review and clocks unchanged, nobody paged or told.
So too when the result that stands is the one named, corrected by the site within its grade: a revision, recorded as
one. Either way the alert never shows a value the site took back. A withdrawal safety raised before the finding the
alert shows (another lane brought it later), or one of a result the alert does not show (`withdrawn_result_id`), is
only recorded. A worse result later comes as `lab.toxicity`: it re-pages the alert and opens a review again
(`signals._open_or_worsen`). Vital-sign findings are withdrawn the same way, one vitals set at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from services.notify import store
from services.notify.lab_alerts import (
    LAB_KIND,
    lab_alert_id,
    lab_revised_mail,
    lab_thread,
    lab_withdrawn_mail,
    withdrawn_before,
    withdrawn_title,
    withdraws_another,
)
from services.notify.mail_content import MailContent
from services.notify.models import Alert
from services.notify.obligations import LAB_REVIEW
from services.notify.sae_alerts import AlertPlan, messages_to
from services.notify.sae_retraction import SYSTEM, paged_recipients
from services.notify.sae_retraction_signals import cancel_reviews, sent_messages, stop_paging
from shared.events import LabToxicity, LabToxicityData, LabToxicityWithdrawalData, LabToxicityWithdrawn

LAB_WITHDRAWN = "lab_finding_withdrawn"
LAB_REVISED = "lab_finding_revised"


def open_what_stands(
    session: Session, signal: LabToxicityWithdrawn, now: datetime, *, open_finding: Callable[[LabToxicity], None]
) -> bool:
    """A withdrawal that leaves a grade standing came before any finding of its term (the routine lane's turn while
    the findings waited on the signals topic): what stands opens the alert as its finding would (`open_finding`: it
    pages, its review owed), showing the result that stands, and the findings it covers are history when they come.
    Before, the first of them opened the alert showing a value the site had replaced (a count of 10 corrected to 22)
    or a grade that no longer stood. False (nothing done) when the alert exists or nothing stands."""
    data = signal.data
    standing = data.standing_result
    thread = lab_thread(signal.trialid, data.subject_id, data.term)
    if data.standing_grade is None or standing is None or data.standing_result_id is None:
        return False
    if store.find_alert_by_thread(session, thread_key=thread) is not None:
        return False
    finding = LabToxicityData(
        site_id=data.site_id,
        subject_id=data.subject_id,
        result_id=data.standing_result_id,
        test=standing.test,
        term=data.term,
        grade=data.standing_grade,
        baseline_grade=None,
        previous_grade=None,
        value=standing.value,
        unit=standing.unit,
        reason=standing.reason,
        collected_at=standing.collected_at,
        source_event_id=data.source_event_id,
        floor=standing.floor,
        received_at=data.received_at,
        measured_by=standing.measured_by,
        sequence=data.sequence if standing.measured_by == "lab" and data.sequence else None,
    )
    open_finding(LabToxicity(id=signal.id, source=signal.source, subject=signal.subject, time=signal.time,
                             trialid=signal.trialid, data=finding))  # fmt: skip
    alert = store.find_alert_by_thread(session, thread_key=thread)
    if alert is None:
        raise RuntimeError(f"opening the finding that stands made no alert on {thread}")
    alert.details = {**alert.details, **_withdrawn_details(data)}
    session.add(alert)
    what = f"{data.term} grade {data.withdrawn_grade}: {data.why}"
    stands = f"grade {data.standing_grade} stands (result {data.standing_result_id}, {_value(data)})"
    detail = f"before its finding reached notify: {what}; {stands}, shown and paged as the finding"
    store.record(session, alert_id=alert.id, actor=SYSTEM, action=LAB_REVISED, detail=detail[:2000], now=now,
                 source_event_id=data.source_event_id, sequence=data.sequence)  # fmt: skip
    return True


def apply_lab_withdrawn(session: Session, signal: LabToxicityWithdrawn, now: datetime) -> None:
    data = signal.data
    thread = lab_thread(signal.trialid, data.subject_id, data.term)
    alert = store.find_alert_by_thread(session, thread_key=thread)
    what = f"{data.term} grade {data.withdrawn_grade}: {data.why}"
    if alert is None:
        if data.standing_grade is None:
            _keep_ahead_of_its_finding(session, signal, thread, what, now)
        return  # else what stands opened it (`open_what_stands`), unless the producer sent no `standing_result`
    if withdrawn_before(alert.details, data):
        late = f"{what}; raised before the finding shown"
        store.record(session, alert_id=alert.id, actor=SYSTEM, action="flagged_again", detail=late[:2000], now=now)
        return
    if withdraws_another(alert.details, data):
        other = f"{what}; not the finding shown (result {alert.details.get('result_id')}), which stands"
        store.record(session, alert_id=alert.id, actor=SYSTEM, action="flagged_again", detail=other[:2000], now=now)
        return
    if data.standing_grade != data.withdrawn_grade:
        alert.title = withdrawn_title(data)[:500]
    elif data.standing_result is not None:  # the same grade stands: the title names no result, but says "at least"
        alert.title = _floor_in_title(alert.title, data.standing_grade, floor=data.standing_result.floor)[:500]
    alert.details = {**alert.details, **_withdrawn_details(data), **_standing_shown(data)}
    alert.updated_at = now
    session.add(alert)
    if data.standing_grade is not None:
        shown = f" ({_value(data)})" if data.standing_result is not None else ""
        stands = f"grade {data.standing_grade} stands (result {data.standing_result_id}{shown})"
        if _revises(data):  # the result shown, corrected within its grade: nothing of the finding was withdrawn
            stands = f"result {data.standing_result_id} revised, still grade {data.standing_grade}{shown}"
        detail = f"{what}; {stands}, now shown; its review stays"
        told = _tell_reviewed(session, signal, alert, now)
        if told:
            detail = f"{what}; {stands}, now shown; its review was completed: told {told}"
        store.record(
            session,
            alert_id=alert.id,
            actor=SYSTEM,
            action=LAB_REVISED,
            detail=detail[:2000],
            now=now,
            source_event_id=data.source_event_id,
            sequence=data.sequence,
        )
        return
    why = f"lab finding withdrawn: {what}; no review is needed for it"
    reviews = cancel_reviews(session, alert, kind=LAB_REVIEW, reason=why, now=now)
    unsent = stop_paging(session, alert.id, why=f"lab finding withdrawn ({data.why})", now=now)
    reviewed = any(
        o.kind == LAB_REVIEW and o.state == "completed" for o in store.obligations_for(session, alert_ids=[alert.id])
    )  # an assessment recorded of a value that no longer stands: whoever was paged hears it too
    told = "nobody (no review was owed, or no page had gone out)"
    if reviews or reviewed:
        mail = lab_withdrawn_mail(signal.trialid, data, reviewed=reviewed and not reviews, vitals=_vitals(alert))
        told = _tell_paged(session, signal, alert, mail, now) or told
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action=LAB_WITHDRAWN,
        detail=(f"{what}; told {told}" + (f"; {unsent} page(s) not yet sent withdrawn" if unsent else ""))[:2000],
        now=now,
        source_event_id=data.source_event_id,
        sequence=data.sequence,
        obligations_cancelled=[o.id for o in reviews],
        unsent_withdrawn=unsent,
    )


def _withdrawn_details(data: LabToxicityWithdrawalData) -> dict[str, object]:
    """What the alert keeps of a withdrawal: the numbers it covers, and the result it named with when the change came
    (an unnumbered finding of that result received no later is history: `lab_alerts.raised_before`)."""
    details: dict[str, object] = {
        "withdrawn_through": data.sequence,
        "standing_grade": data.standing_grade,
        "standing_result_id": data.standing_result_id,
    }
    if data.standing_grade != data.withdrawn_grade:
        details["no_longer_stands"] = f"grade {data.withdrawn_grade} ({data.why})"
    if data.withdrawn_result_id is not None:
        details["withdrawn_result_id"] = data.withdrawn_result_id
        details["withdrawn_received_at"] = data.received_at.isoformat()
    return details


def _standing_shown(data: LabToxicityWithdrawalData) -> dict[str, object]:
    """The finding's fields, from the result that stands: the alert must not go on showing a value taken back. The
    numbers and receipt the ordering reads (`sequence`, `previous_grade`, `received_at`) stay the finding's."""
    standing = data.standing_result
    if data.standing_grade is None or standing is None:
        return {}
    return {
        "result_id": data.standing_result_id,
        "grade": data.standing_grade,
        **standing.model_dump(mode="json"),
    }


def _tell_reviewed(session: Session, signal: LabToxicityWithdrawn, alert: Alert, now: datetime) -> str:
    """Whoever was paged hears once when what a completed review assessed changed (no review open: the assessment
    recorded is the last word on it); who was told, or "" when no review was completed or none is open."""
    obligations = [o for o in store.obligations_for(session, alert_ids=[alert.id]) if o.kind == LAB_REVIEW]
    if not any(o.state == "completed" for o in obligations) or any(o.state == "open" for o in obligations):
        return ""
    return _tell_paged(
        session, signal, alert, lab_revised_mail(signal.trialid, signal.data, vitals=_vitals(alert)), now
    )


def _tell_paged(session: Session, signal: LabToxicityWithdrawn, alert: Alert, mail: MailContent, now: datetime) -> str:
    """`mail`, once, to whoever the alert's pages reached; who was told ("" when nobody was paged)."""
    paged = paged_recipients(sent_messages(session, alert.id, now))
    notices = messages_to(signal.id, paged, mail)
    store.queue_messages(session, alert_id=alert.id, messages=notices, now=now)
    return ", ".join(r.address for r in paged) if notices else ""


def _vitals(alert: Alert) -> bool:
    """Whether the alert's finding was graded from vital signs (its notices say so)."""
    return alert.details.get("measured_by") == "vitals"


def _floor_in_title(title: str, grade: int | None, *, floor: bool) -> str:
    """The title with "at least grade N" as the result that stands has it ('<1.0' corrected to 0.8: exactly grade 3)."""
    exact, at_least = f"grade {grade}", f"at least grade {grade}"
    if floor:
        return title if at_least in title else title.replace(exact, at_least, 1)
    return title.replace(at_least, exact, 1)


def _revises(data: LabToxicityWithdrawalData) -> bool:
    """The result withdrawn is the one that stands, at the grade withdrawn: the site corrected it within its grade
    (safety's revision). The same reading at a lower grade (a fever run cut below 24 h) is a grade that fell."""
    return (
        data.withdrawn_result_id is not None
        and data.withdrawn_result_id == data.standing_result_id
        and data.withdrawn_grade == data.standing_grade
    )


def _value(data: LabToxicityWithdrawalData) -> str:
    standing = data.standing_result
    return f"{standing.value} {standing.unit or ''}".rstrip() if standing is not None else ""


def _keep_ahead_of_its_finding(
    session: Session, signal: LabToxicityWithdrawn, thread: str, what: str, now: datetime
) -> None:
    """The withdrawal came before the finding it withdraws (the routine lane's turn while the finding waited on the
    signals topic): the thread's alert is kept, resolved, with nothing owed and no page, so the finding, when it
    comes, is history (`lab_alerts.raised_before`) rather than a review of a result already taken back."""
    data = signal.data
    plan = AlertPlan(
        alert_id=lab_alert_id(thread),
        thread_key=thread,
        title=withdrawn_title(data)[:500],
        details={"term": data.term, **_withdrawn_details(data)},
        obligation=None,
        messages=(),
    )
    alert = store.create_alert(
        session,
        plan=plan,
        kind=LAB_KIND,
        trial_id=signal.trialid,
        site_id=data.site_id,
        subject_id=data.subject_id,
        now=now,
    )
    alert.state = "resolved"
    session.add(alert)
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action=LAB_WITHDRAWN,
        detail=f"before its finding reached notify: {what}"[:2000],
        now=now,
        source_event_id=data.source_event_id,
        sequence=data.sequence,
    )
