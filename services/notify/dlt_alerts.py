"""Pure: DLT and stopping-rule signals as alerts with a review obligation, and the informational alerts
(cohort decisions, missed assessments, protocol deviations) that notify once and carry no clock.

A suspected DLT's review clock starts when safety suspected it (the signal's time), never at processing.
The stopping-rule review uses dlt.review_hours: the protocol has no field of its own for it yet.
"""

from __future__ import annotations

from services.notify.escalation import initial_targets
from services.notify.mail_content import (
    assessment_missed_mail,
    cohort_mail,
    deviation_mail,
    dlt_revised_mail,
    dlt_suspected_mail,
    dlt_withdrawn_mail,
    dose_recommendation_mail,
    stopping_rule_mail,
)
from services.notify.obligations import (
    DEVIATION_REVIEW,
    DLT_REVIEW,
    DOSE_RECOMMENDATION_REVIEW,
    STOPPING_RULE_REVIEW,
    deadline,
)
from services.notify.sae_alerts import AlertPlan, MessagePlan, ObligationPlan, plan_messages
from shared.clock import utc
from shared.events import (
    AssessmentMissed,
    CohortDecision,
    DltDecided,
    DltSuspected,
    DltWithdrawn,
    DoseRecommended,
    ProtocolDeviation,
    StoppingRuleFired,
    deterministic_id,
)
from shared.protocol import Protocol

DLT_KIND = "dlt"
STOPPING_RULE_KIND = "stopping_rule"
COHORT_KIND = "cohort_decision"
ASSESSMENT_KIND = "assessment_missed"
DEVIATION_KIND = "protocol_deviation"
DOSE_RECOMMENDATION_KIND = "dose_recommendation"
TRIAL_LEVEL = ""
"""site and subject of alerts about a whole arm (no subject): empty, so subject filters never match them."""


def dlt_thread_key(trial_id: str, dlt_id: str) -> str:
    return f"{DLT_KIND}:{trial_id}:{dlt_id}"


def plan_dlt_suspected(signal: DltSuspected, protocol: Protocol, *, reason: str) -> AlertPlan:
    data = signal.data
    thread_key = dlt_thread_key(signal.trialid, data.dlt_id)
    alert_id = deterministic_id("alert", thread_key)
    hours = protocol.dlt.review_hours
    due_at = deadline(signal.time, hours)
    content = dlt_suspected_mail(signal.trialid, data, due_at=due_at, hours=hours, reason=reason)
    targets = initial_targets(protocol, protocol.dlt.notify_roles, escalates=True)
    return AlertPlan(
        alert_id=alert_id,
        thread_key=thread_key,
        title=f"Suspected DLT: {data.term} (subject {data.subject_id}, site {data.site_id})",
        details=data.model_dump(mode="json"),
        obligation=ObligationPlan(
            id=deterministic_id("obligation", alert_id, DLT_REVIEW, signal.id),
            kind=DLT_REVIEW,
            description=f"Confirm or reject the suspected DLT within {hours} h",
            clock_started_at=utc(signal.time),
            clock_basis="suspicion",
            due_at=due_at,
        ),
        messages=plan_messages(signal.id, protocol, targets, content),
    )


def plan_dlt_withdrawn(signal: DltWithdrawn, protocol: Protocol) -> AlertPlan:
    data = signal.data
    thread_key = dlt_thread_key(signal.trialid, data.dlt_id)
    content = dlt_withdrawn_mail(signal.trialid, data)
    return AlertPlan(
        alert_id=deterministic_id("alert", thread_key),
        thread_key=thread_key,
        title=f"Suspected DLT withdrawn: {data.term} (subject {data.subject_id}, site {data.site_id})",
        details=data.model_dump(mode="json"),
        obligation=None,
        messages=plan_messages(signal.id, protocol, list(protocol.dlt.notify_roles), content),
    )


def dlt_revision_messages(signal: DltDecided, protocol: Protocol) -> tuple[MessagePlan, ...]:
    """A decided DLT reversed: one notice to the roles told of the suspicion (none for a first decision: that one
    closes the review they were paged for, and its decider is the reviewer)."""
    if signal.data.revises is None:
        return ()
    content = dlt_revised_mail(signal.trialid, signal.data)
    return plan_messages(signal.id, protocol, list(protocol.dlt.notify_roles), content)


def plan_stopping_rule(signal: StoppingRuleFired, protocol: Protocol) -> AlertPlan:
    data = signal.data
    thread_key = f"{STOPPING_RULE_KIND}:{signal.trialid}:{data.arm}"
    alert_id = deterministic_id("alert", thread_key)
    hours = protocol.dlt.review_hours
    due_at = deadline(signal.time, hours)
    content = stopping_rule_mail(signal.trialid, data, due_at=due_at, hours=hours)
    targets = initial_targets(protocol, protocol.dlt.notify_roles, escalates=True)
    return AlertPlan(
        alert_id=alert_id,
        thread_key=thread_key,
        title=f"Stopping rule fired in arm {data.arm} ({data.dlt_confirmed + data.dlt_suspected} DLTs)",
        details=data.model_dump(mode="json"),
        obligation=ObligationPlan(
            id=deterministic_id("obligation", alert_id, STOPPING_RULE_REVIEW, signal.id),
            kind=STOPPING_RULE_REVIEW,
            description=f"Review the stopping rule for arm {data.arm} within {hours} h",
            clock_started_at=utc(signal.time),
            clock_basis="signal",
            due_at=due_at,
        ),
        messages=plan_messages(signal.id, protocol, targets, content),
    )


def plan_dose_recommendation(signal: DoseRecommended, protocol: Protocol) -> AlertPlan:
    """The recommended dose (or none tolerated, or a withdrawn recommendation) pages until acknowledged, with a
    committee review due in dlt.review_hours: it is the decision the whole escalation was for."""
    data = signal.data
    thread_key = f"{DOSE_RECOMMENDATION_KIND}:{signal.trialid}"
    alert_id = deterministic_id("alert", thread_key)
    hours = protocol.dlt.review_hours
    due_at = deadline(signal.time, hours)
    content = dose_recommendation_mail(signal.trialid, data, due_at=due_at, hours=hours)
    targets = initial_targets(protocol, protocol.dlt.notify_roles, escalates=True)
    title = (
        f"Recommended dose: arm {data.recommended_arm} ({data.basis.replace('_', ' ')})"
        if data.recommended_arm
        else f"Recommended dose: none ({data.basis.replace('_', ' ')})"
    )
    return AlertPlan(
        alert_id=alert_id,
        thread_key=thread_key,
        title=title,
        details=data.model_dump(mode="json"),
        obligation=ObligationPlan(
            id=deterministic_id("obligation", alert_id, DOSE_RECOMMENDATION_REVIEW, signal.id),
            kind=DOSE_RECOMMENDATION_REVIEW,
            description=f"Review the recommended dose within {hours} h",
            clock_started_at=utc(signal.time),
            clock_basis="signal",
            due_at=due_at,
        ),
        messages=plan_messages(signal.id, protocol, targets, content),
    )


def dlt_worse(previous: dict[str, object], grade: int | None) -> str | None:
    """A follow-up of a suspected DLT pages again only when its grade went up."""
    before = previous.get("grade")
    if grade is not None and (not isinstance(before, int) or grade > before):
        return f"grade increased to {grade}"
    return None


def stopping_worse(previous: dict[str, object], dlts: int) -> str | None:
    confirmed, suspected = previous.get("dlt_confirmed"), previous.get("dlt_suspected")
    before = (confirmed if isinstance(confirmed, int) else 0) + (suspected if isinstance(suspected, int) else 0)
    return f"{dlts} DLTs in the arm (was {before})" if dlts > before else None


def plan_information(signal: CohortDecision | AssessmentMissed | ProtocolDeviation, protocol: Protocol) -> AlertPlan:
    """Worth knowing, nothing due: one mail to dlt.notify_roles, an alert to read and acknowledge."""
    roles = list(protocol.dlt.notify_roles)
    trial = signal.trialid
    if isinstance(signal, CohortDecision):
        cohort = signal.data
        thread_key = f"{COHORT_KIND}:{trial}:{cohort.arm}"
        title = f"Arm {cohort.arm}: {cohort.decision}"
        content = cohort_mail(trial, cohort)
    elif isinstance(signal, AssessmentMissed):
        missed = signal.data
        thread_key = f"{ASSESSMENT_KIND}:{trial}:{missed.subject_id}:{missed.assessment}"
        title = f"Missed assessment '{missed.assessment}' (subject {missed.subject_id}, site {missed.site_id})"
        content = assessment_missed_mail(trial, missed)
    else:
        deviation = signal.data
        thread_key = f"{DEVIATION_KIND}:{trial}:{deviation.subject_id}:{signal.id}"
        title = f"Protocol deviation: {deviation.kind} (subject {deviation.subject_id}, site {deviation.site_id})"
        content = deviation_mail(trial, deviation)
        # Eligibility, dosing and release deviations name their own roles (the PI among them) besides the DLT roles.
        roles = list(dict.fromkeys([*roles, *deviation.notify_roles]))
        if deviation.pages:
            # Enrolled above an arm under DLT review, held or stopped, dosed while ineligible or from a lot not
            # released, overdosed: a subject may be at risk, so it pages
            # through the escalation policy until acknowledged, and the review is an obligation.
            alert_id = deterministic_id("alert", thread_key)
            hours = protocol.dlt.review_hours
            return AlertPlan(
                alert_id=alert_id,
                thread_key=thread_key,
                title=title[:500],
                details=deviation.model_dump(mode="json"),
                obligation=ObligationPlan(
                    id=deterministic_id("obligation", alert_id, DEVIATION_REVIEW, signal.id),
                    kind=DEVIATION_REVIEW,
                    description=f"Review the protocol deviation within {hours} h",
                    clock_started_at=utc(signal.time),
                    clock_basis="signal",
                    due_at=deadline(signal.time, hours),
                ),
                messages=plan_messages(signal.id, protocol, initial_targets(protocol, roles, escalates=True), content),
            )
    return AlertPlan(
        alert_id=deterministic_id("alert", thread_key),
        thread_key=thread_key,
        title=title[:500],
        details=signal.data.model_dump(mode="json"),
        obligation=None,
        messages=plan_messages(signal.id, protocol, roles, content),
    )


def information_kind(signal: CohortDecision | AssessmentMissed | ProtocolDeviation) -> str:
    if isinstance(signal, CohortDecision):
        return COHORT_KIND
    if isinstance(signal, AssessmentMissed):
        return ASSESSMENT_KIND
    return DEVIATION_KIND
