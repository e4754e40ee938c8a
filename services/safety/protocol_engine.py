"""Safety's protocol engine: DLT windows, DLT records, cohort (3+3) state and enrolment checks.

The service layer around the pure rules in dlt_window, dlt and cohort: it reads what is stored, applies
them, writes the resulting state and an audit row for every transition, and returns the signals for the
caller's outbox. Called by the consumer (every clinical event), the officer API and the sweep; keyword-only,
never commits.

Everything is recomputed from the stored data rather than patched incrementally, so an AE that arrived
before its subject's infusion, a status change, or a late baseline lab all end in the same state as the
same data in order would. Signal ids derive from the source event (or the record's revision where there
is no single source event) and the rule, so a re-delivery or a replay produces the same ids.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlmodel import Session

from services.safety import store
from services.safety.cohort import ArmAssessment, SubjectOutcome, assess_arms, enrolment_deviations
from services.safety.dlt import AeFacts, DltSignal, DltState, classify, fold_versions, transition
from services.safety.dlt_window import DltWindow, enrolment_window, infusion_window, start_of_day_everywhere
from services.safety.models import AeVersion, CohortState, DltRecord, Dose, Subject
from shared.audit import append_audit
from shared.events import (
    AeData,
    CohortData,
    CohortDecision,
    DltData,
    DltDecided,
    DltDecisionData,
    DltSuspected,
    DltWithdrawn,
    ProtocolDeviation,
    ProtocolDeviationData,
    StoppingRuleFired,
    SubjectEnrolled,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol

SIGNAL_SOURCE = "/services/safety"
AUDIT_SERVICE = "safety"
SYSTEM_ACTOR = "safety (automatic)"
Decision = Literal["confirmed", "rejected"]


def subject_window(
    protocol: Protocol, *, subject: Subject, doses: Sequence[Dose], inactive_doses: Collection[str]
) -> DltWindow | None:
    """The subject's DLT window, from the first infusion still on record (or the enrolment date)."""
    rules = protocol.dlt
    if rules.anchor == "enrolment":
        if subject.enrolled_at is None:
            return None
        return enrolment_window(enrolled_on=subject.enrolled_at, days=rules.window_days)
    given = [d for d in doses if d.dose_id not in inactive_doses]
    if not given:
        return None
    first = min(given, key=lambda d: d.administered_at)
    return infusion_window(first_infusion=first.administered_at, site_day=first.administered_on, days=rules.window_days)


def window_of(session: Session, *, protocol: Protocol, subject: Subject) -> DltWindow | None:
    keys = {"trial_id": subject.trial_id, "subject_id": subject.subject_id}
    return subject_window(
        protocol,
        subject=subject,
        doses=store.doses(session, **keys),
        inactive_doses=store.inactive_records(session, **keys, record_type="dose"),
    )


def ae_facts(versions: Iterable[AeVersion], *, inactive: dict[str, str]) -> list[AeFacts]:
    """Each AE folded over its versions, with the site's status (entered in error, deleted) if any."""
    by_ae: dict[str, list[AeFacts]] = defaultdict(list)
    for row in versions:
        data = AeData.model_validate(row.payload)
        by_ae[row.ae_id].append(
            AeFacts(
                ae_id=data.ae_id,
                version=data.version,
                term=data.ctcae_term or data.term,
                grade=data.grade,
                relatedness=data.relatedness,
                onset=data.onset,
                status=inactive.get(row.ae_id),
            )
        )
    return [fold_versions(by_ae[ae_id]) for ae_id in sorted(by_ae)]


def dlt_id_for(trial_id: str, subject_id: str, ae_id: str) -> str:
    return deterministic_id("dlt", trial_id, subject_id, ae_id)


def reassess_subject(
    session: Session,
    *,
    protocol: Protocol,
    trial_id: str,
    subject_id: str,
    source_event_id: str,
    now: datetime,
    signals_topic: str,
) -> list[Outgoing]:
    """Re-run the DLT rule over every AE of the subject; signal each record whose state changed."""
    subject = session.get(Subject, (trial_id, subject_id))
    if subject is None:
        return []
    keys = {"trial_id": trial_id, "subject_id": subject_id}
    window = window_of(session, protocol=protocol, subject=subject)
    baselines = store.baseline_grades(session, **keys)
    inactive = store.inactive_records(session, **keys, record_type="ae")
    records = {r.ae_id: r for r in store.dlt_records(session, **keys)}
    signals = []
    for facts in ae_facts(store.ae_versions(session, **keys), inactive=inactive):
        verdict = classify(facts, rules=protocol.dlt, window=window, baseline_grades=baselines)
        record = records.get(facts.ae_id)
        current = DltState(record.state) if record else None
        step = transition(current, verdict, grade=facts.grade, decided_grade=record.decided_grade if record else None)
        if step.state is None:
            continue
        if record is None:
            record = DltRecord(
                dlt_id=dlt_id_for(trial_id, subject_id, facts.ae_id),
                trial_id=trial_id,
                subject_id=subject_id,
                ae_id=facts.ae_id,
                state=step.state.value,
                term=facts.term,
                ae_version=facts.version,
                reason=verdict.reason,
                suspected_at=now,
                updated_at=now,
            )
        record.arm = subject.arm
        record.term = facts.term[:500]
        record.grade = facts.grade
        record.relatedness = facts.relatedness.value if facts.relatedness else None
        record.ae_version = facts.version
        record.reason = verdict.reason[:2000]
        record.window_start = window.start if window else None
        record.window_end = window.end if window else None
        if verdict.criterion is not None:
            record.criterion = verdict.criterion
        if step.state is not current:
            if current is not None:
                record.revision += 1
            record.state = step.state.value
            record.updated_at = now
            append_audit(
                session,
                service=AUDIT_SERVICE,
                actor=SYSTEM_ACTOR,
                action=f"dlt.{step.state.value}",
                entity=f"dlt/{record.dlt_id}",
                detail={
                    "previous_state": current.value if current else None,
                    "subject_id": subject_id,
                    "ae_id": facts.ae_id,
                    "ae_version": facts.version,
                    "reason": record.reason,
                    "source_event_id": source_event_id,
                },
                now=now,
            )
        session.add(record)
        if step.signal is not None:
            signals.append(
                _dlt_signal(
                    step.signal,
                    record,
                    site_id=subject.site_id,
                    source_event_id=source_event_id,
                    now=now,
                    topic=signals_topic,
                )
            )
    return signals


def _dlt_signal(
    kind: DltSignal, record: DltRecord, *, site_id: str, source_event_id: str, now: datetime, topic: str
) -> Outgoing:
    data = DltData(
        dlt_id=record.dlt_id,
        site_id=site_id,
        subject_id=record.subject_id,
        arm=record.arm,
        ae_id=record.ae_id,
        ae_version=record.ae_version,
        term=record.term,
        grade=record.grade,
        relatedness=record.relatedness,
        criterion=record.criterion or "",
        window_start=record.window_start,
        window_end=record.window_end,
        reason=record.reason,
        source_event_id=source_event_id,
    )
    common = {
        "id": deterministic_id("signal", source_event_id, kind.value, record.dlt_id),
        "source": SIGNAL_SOURCE,
        "subject": record.subject_id,
        "time": now,
        "trialid": record.trial_id,
        "data": data,
    }
    envelope = (
        DltSuspected.model_validate(common) if kind is DltSignal.SUSPECTED else DltWithdrawn.model_validate(common)
    )
    return Outgoing(topic=topic, key=message_key(record.trial_id, record.subject_id), envelope=envelope)


def subject_outcomes(
    session: Session, *, protocol: Protocol, now: datetime, exclude: str | None = None
) -> list[SubjectOutcome]:
    """Every enrolled subject (enrolment not taken back) with evaluability at `now` and their DLTs."""
    trial_id = protocol.trial_id
    withdrawn = store.inactive_in_trial(session, trial_id=trial_id, record_type="enrollment")
    inactive_doses = store.inactive_in_trial(session, trial_id=trial_id, record_type="dose")
    doses: dict[str, list[Dose]] = defaultdict(list)
    for dose in store.doses(session, trial_id=trial_id):
        doses[dose.subject_id].append(dose)
    states: dict[str, set[str]] = defaultdict(set)
    for record in store.dlt_records(session, trial_id=trial_id):
        states[record.subject_id].add(record.state)
    outcomes = []
    for subject in store.subjects(session, trial_id=trial_id):
        sid = subject.subject_id
        if subject.arm is None or sid == exclude or (sid, sid) in withdrawn:
            continue
        window = subject_window(
            protocol,
            subject=subject,
            doses=doses[sid],
            inactive_doses={dose_id for (owner, dose_id) in inactive_doses if owner == sid},
        )
        outcomes.append(
            SubjectOutcome(
                subject_id=sid,
                arm=subject.arm,
                evaluable=window is not None and window.closed(now),
                confirmed_dlt=DltState.CONFIRMED.value in states[sid],
                suspected_dlt=DltState.SUSPECTED.value in states[sid],
            )
        )
    return outcomes


def reassess_cohorts(
    session: Session, *, protocol: Protocol, now: datetime, source_id: str, signals_topic: str
) -> list[Outgoing]:
    """Recompute every arm; signal a changed decision, and the stopping rule when it newly fires."""
    trial_id = protocol.trial_id
    assessed = assess_arms(protocol, subject_outcomes(session, protocol=protocol, now=now))
    stored = store.cohort_states(session, trial_id=trial_id)
    signals: list[Outgoing] = []
    for arm in assessed:
        row = stored.get(arm.arm)
        if row is None:
            if arm.enrolled == 0 and arm.decision == "enrolling":
                continue
            row = CohortState(trial_id=trial_id, arm=arm.arm, decision="enrolling", updated_at=now)
        previous = row.decision
        changed = arm.decision != previous
        fires = arm.stopping and not row.stopping
        row.enrolled, row.evaluable = arm.enrolled, arm.evaluable
        row.dlt_confirmed, row.dlt_suspected = arm.dlt_confirmed, arm.dlt_suspected
        row.reason = arm.reason[:2000]
        row.stopping = arm.stopping
        if changed or fires:
            row.revision += 1
            row.decision = arm.decision
            row.updated_at = now
            data = _cohort_data(arm, previous=previous)
            append_audit(
                session,
                service=AUDIT_SERVICE,
                actor=SYSTEM_ACTOR,
                action="stopping_rule.fired" if fires and not changed else "cohort.decision",
                entity=f"cohort/{trial_id}/{arm.arm}",
                detail={**data.model_dump(mode="json"), "stopping": arm.stopping, "source_id": source_id},
                now=now,
            )
            for kind, fired in (("cohort.decision", changed), ("stopping_rule.fired", fires)):
                if fired:
                    signals.append(_cohort_signal(kind, data, trial_id, row.revision, source_id, now, signals_topic))
        session.add(row)
    return signals


def _cohort_data(arm: ArmAssessment, *, previous: str) -> CohortData:
    return CohortData(
        arm=arm.arm,
        enrolled=arm.enrolled,
        evaluable=arm.evaluable,
        dlt_confirmed=arm.dlt_confirmed,
        dlt_suspected=arm.dlt_suspected,
        decision=arm.decision,
        previous_decision=previous,
        next_arm=arm.next_arm,
        reason=arm.reason,
    )


def _cohort_signal(
    kind: str, data: CohortData, trial_id: str, revision: int, source_id: str, now: datetime, topic: str
) -> Outgoing:
    common = {
        "id": deterministic_id("signal", source_id, kind, trial_id, data.arm, str(revision)),
        "source": SIGNAL_SOURCE,
        "subject": f"arm:{data.arm}",
        "time": now,
        "trialid": trial_id,
        "data": data,
    }
    envelope = (
        CohortDecision.model_validate(common) if kind == "cohort.decision" else StoppingRuleFired.model_validate(common)
    )
    return Outgoing(topic=topic, key=message_key(trial_id, f"arm:{data.arm}"), envelope=envelope)


def check_enrolment(
    session: Session, *, protocol: Protocol, envelope: SubjectEnrolled, now: datetime, signals_topic: str
) -> list[Outgoing]:
    """Deviations of this enrolment, judged on the arms as they stood when the enrolment day began.

    The enrolment has a date but no time, so the check is judged at a fixed instant, never at `now`: the
    first moment of the enrolment date anywhere (00:00 at UTC+14). A replay long after the fact then gives
    the same answer as live processing, and the earliest instant is the conservative one (a predecessor
    whose windows closed during that day has not yet cleared). Subjects of other arms arrive on other
    partitions, so a predecessor's data still in flight can make a deviation look real (the officer reviews
    each one).
    """
    judged_at = start_of_day_everywhere(envelope.data.enrolled_at)
    outcomes = subject_outcomes(session, protocol=protocol, now=judged_at, exclude=envelope.subject)
    arms = {a.arm: a for a in assess_arms(protocol, outcomes)}
    signals = []
    for deviation in enrolment_deviations(envelope.data.arm, protocol=protocol, arms=arms):
        signal = ProtocolDeviation(
            id=deterministic_id("signal", envelope.id, "protocol.deviation", deviation.kind),
            source=SIGNAL_SOURCE,
            subject=envelope.subject,
            time=now,
            trialid=envelope.trialid,
            data=ProtocolDeviationData(
                site_id=envelope.siteid,
                subject_id=envelope.subject,
                arm=envelope.data.arm,
                kind=deviation.kind,
                detail=f"enrolled {envelope.data.enrolled_at.isoformat()}: {deviation.detail}",
            ),
        )
        signals.append(
            Outgoing(topic=signals_topic, key=message_key(envelope.trialid, envelope.subject), envelope=signal)
        )
    return signals


class UnknownDlt(LookupError):
    pass


class DltAlreadyDecided(Exception):
    def __init__(self, record: DltRecord) -> None:
        super().__init__(
            f"DLT {record.dlt_id} was already {record.state} by {record.decided_by} at "
            f"{record.decided_at.isoformat() if record.decided_at else 'an unknown time'}"
        )
        self.record = record


class DltStateChanged(Exception):
    """The decision was made about a state the DLT is no longer in (a follow-up moved it since)."""

    def __init__(self, record: DltRecord, message: str) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class DecisionOutcome:
    record: DltRecord
    changed: bool
    signals: list[Outgoing]


def decide_dlt(
    session: Session,
    *,
    protocol: Protocol,
    dlt_id: str,
    decision: Decision,
    actor: str,
    reason: str,
    now: datetime,
    signals_topic: str,
    expected_state: DltState | None = None,
) -> DecisionOutcome:
    """An officer confirms or rejects a DLT; the same decision again is a no-op, a different one a conflict.

    The officer decides about the DLT as they saw it: with `expected_state`, a DLT that has moved since
    (a follow-up withdrew it) is a conflict. Without it, confirming a withdrawn DLT is refused: the current
    data no longer meet a criterion, so the officer must say they confirm it as withdrawn.
    """
    record = session.get(DltRecord, dlt_id, with_for_update=True)
    if record is None or record.trial_id != protocol.trial_id:
        raise UnknownDlt(dlt_id)
    if record.state == decision:
        return DecisionOutcome(record, False, [])
    if record.state in (DltState.CONFIRMED.value, DltState.REJECTED.value):
        raise DltAlreadyDecided(record)
    if expected_state is not None and record.state != expected_state.value:
        raise DltStateChanged(
            record,
            f"DLT {dlt_id} is {record.state}, not {expected_state.value} as the decision expected: "
            f"{record.reason}. Review the current state and decide again.",
        )
    if expected_state is None and decision == "confirmed" and record.state == DltState.WITHDRAWN.value:
        raise DltStateChanged(
            record,
            f"DLT {dlt_id} was withdrawn by a later follow-up ({record.reason}). To confirm it anyway, send "
            '"expected_state": "withdrawn" with the decision.',
        )
    previous = record.state
    record.state = decision
    record.revision += 1
    record.decided_by = actor
    record.decided_at = now
    record.decision_reason = reason
    record.decided_grade = record.grade
    record.updated_at = now
    session.add(record)
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=actor,
        action=f"dlt.{decision}",
        entity=f"dlt/{dlt_id}",
        detail={
            "previous_state": previous,
            "reason": reason,
            "subject_id": record.subject_id,
            "ae_id": record.ae_id,
            "ae_version": record.ae_version,
            "grade": record.grade,
            "criterion": record.criterion,
        },
        now=now,
    )
    signal = DltDecided(
        id=deterministic_id("signal", dlt_id, "dlt.decided", str(record.revision)),
        source=SIGNAL_SOURCE,
        subject=record.subject_id,
        time=now,
        trialid=record.trial_id,
        data=DltDecisionData(
            dlt_id=dlt_id,
            subject_id=record.subject_id,
            arm=record.arm,
            decision=decision,
            decided_by=actor,
            reason=reason,
            decided_at=now,
        ),
    )
    session.flush()
    signals = [Outgoing(topic=signals_topic, key=message_key(record.trial_id, record.subject_id), envelope=signal)]
    signals += reassess_cohorts(
        session, protocol=protocol, now=now, source_id=f"{dlt_id}/{record.revision}", signals_topic=signals_topic
    )
    return DecisionOutcome(record, True, signals)
