"""Safety's protocol engine: DLT windows, DLT records, per-subject 3+3 outcomes, arm decisions, enrolment checks.

Shaped as a decider: per event, *load* the subject's stored state once (subject_store.load_subject_state),
*decide* with the pure rules (dlt_window, dlt, ae_terms, evaluability, cohort), *save* the DLT records and the
subject's outcome row. Only when that stored outcome actually changed are the arms reassessed: each touched
arm's tally is summed from its subjects' stored outcome rows, and the decisions of the (few) arms are taken
from the stored tallies; the trial is never rescanned. Time-driven changes (a window closing) are picked up by
the sweep through each outcome row's `changes_at`.

A subject is always recomputed from its own stored data, so an AE that arrived before its subject's
infusion, a status change, or a late baseline lab all end in the same state as the same data in order
would. Signal ids derive from the source event (or the record's revision where there is no single source
event) and the rule, so a re-delivery or a replay produces the same ids. Keyword-only, never commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal, NamedTuple

from sqlalchemy import inspect
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session

from services.safety import subject_store
from services.safety.ae_terms import map_ae_term
from services.safety.assessments import ReviewMark, missing_kinds, schedule
from services.safety.cohort import (
    ArmAssessment,
    ArmTally,
    Recommendation,
    TrialAssessment,
    assess_trial,
    enrolment_deviations,
    tally,
)
from services.safety.dlt import (
    AeFacts,
    Classification,
    DltSignal,
    DltState,
    LabPoint,
    classify,
    classify_labs,
    cytopenia_terms,
    fold_versions,
    lab_dlt_id_part,
    transition,
)
from services.safety.dlt_decision_basis import DataLook, check_basis, decision_on_file, is_other_event
from services.safety.dlt_window import DltWindow, Infusion, partial_date_range, start_of_day_everywhere
from services.safety.dlt_window import subject_window as window_rule
from services.safety.evaluability import SubjectFacts, SubjectOutcome, assess_subject
from services.safety.models import (
    AeVersion,
    CohortState,
    DltRecord,
    DoseRecommendationRow,
    RecordStatus,
    Subject,
    SubjectOutcomeRow,
)
from services.safety.subject_store import AeVersionFacts, LabFacts, SubjectState, load_subject_state
from shared.audit import append_audit
from shared.clock import utc
from shared.events import (
    AeData,
    CohortData,
    CohortDecision,
    DataQualityData,
    DataQualityFlagged,
    DltData,
    DltDecided,
    DltDecisionData,
    DltSuspected,
    DltWithdrawn,
    DoseRecommendationData,
    DoseRecommended,
    ProtocolDeviation,
    ProtocolDeviationData,
    StoppingRuleFired,
    SubjectEnrolled,
    SubjectStatusChanged,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol
from shared.rows import assign, new_row

SIGNAL_SOURCE = "/services/safety"
AUDIT_SERVICE = "safety"
SYSTEM_ACTOR = "safety (automatic)"
Decision = Literal["confirmed", "rejected"]
UNMAPPED_TERM = "unmapped_term"


@dataclass
class Reassessed:
    """What reassessing one subject produced: its signals, and the arms whose tallies it changed."""

    signals: list[Outgoing] = field(default_factory=list)
    arms: set[str] = field(default_factory=set)


def subject_window(protocol: Protocol, state: SubjectState) -> DltWindow | None:
    subject = state.subject
    inactive = state.inactive_ids("dose")
    arm = protocol.arm(subject.arm) if subject.arm else None
    infusions = [
        Infusion(
            administered_at=d.administered_at,
            site_day=d.administered_on or utc(d.administered_at).date(),
            utc_offset=(
                timedelta(minutes=d.utc_offset_minutes)
                if d.utc_offset_minutes is not None
                else (timedelta(0) if d.administered_on is None else None)
            ),
        )
        for d in state.doses
        if d.dose_id not in inactive
    ]
    return window_rule(
        anchor=protocol.dlt.anchor,
        days=protocol.dlt.window_days,
        count=protocol.study_days,
        infusions=infusions,
        planned_infusions=arm.infusions if arm else 1,
        interval_days=arm.interval_days if arm else None,
        enrolled_on=subject.enrolled_at,
    )


def window_of(session: Session, *, protocol: Protocol, subject: Subject) -> DltWindow | None:
    state = load_subject_state(session, trial_id=subject.trial_id, subject_id=subject.subject_id)
    return subject_window(protocol, state) if state is not None else None


def ae_facts(
    versions: Iterable[AeVersion | AeVersionFacts], *, inactive: dict[str, str], protocol: Protocol
) -> list[AeFacts]:
    """Each AE folded over its versions, its term mapped to CTCAE, with the site's status if any."""
    by_ae: dict[str, list[AeFacts]] = defaultdict(list)
    for row in versions:
        data = AeData.model_validate(row.payload)
        mapping = map_ae_term(
            data.term, ctcae_term=data.ctcae_term, meddra_code=data.meddra_code, synonyms=protocol.dlt.synonyms
        )
        words = (
            map_ae_term(data.term, ctcae_term=data.ctcae_term, meddra_code=None, synonyms=protocol.dlt.synonyms)
            if mapping.by == "meddra_code"
            else mapping
        )
        by_ae[row.ae_id].append(
            AeFacts(
                ae_id=data.ae_id,
                version=data.version,
                term=mapping.terms[0] if mapping.mapped else (data.ctcae_term or data.term),
                grade=data.grade,
                relatedness=data.relatedness,
                onset=data.onset,
                status=inactive.get(row.ae_id),
                terms=mapping.terms,
                mapping_note=None if mapping.by in (None, "ctcae_term", "term") else mapping.detail,
                disputed_terms=words.terms if words.mapped and set(words.terms) != set(mapping.terms) else (),
            )
        )
    return [fold_versions(by_ae[ae_id]) for ae_id in sorted(by_ae)]


def dlt_id_for(trial_id: str, subject_id: str, ae_id: str) -> str:
    return deterministic_id("dlt", trial_id, subject_id, ae_id)


@dataclass(frozen=True)
class _Verdict:
    """One DLT candidate (an AE, or a haematological term's labs) as the record update needs it."""

    key: str
    term: str
    grade: int | None
    relatedness: str | None
    version: int
    meets: bool
    criterion: str | None
    reason: str
    on: date | None = None
    """The earliest date the DLT can have begun (AE onset, or the result's collection); None: unknown."""
    active: bool = True
    """False: the site marked the AE entered in error or deleted."""
    met: tuple[str, ...] = ()
    """Every criterion the AE meets (`dlt.Classification.met`)."""

    def look(self) -> DataLook:
        return DataLook(
            term=self.term,
            version=self.version,
            grade=self.grade,
            relatedness=self.relatedness,
            meets=self.meets,
            criterion=self.criterion,
            reason=self.reason,
            active=self.active,
        )


def _pre_dose(lab: LabFacts, window: DltWindow | None) -> bool:
    """A baseline is drawn before the product: a result tagged baseline but collected after the window opened (the
    first infusion) is an on-treatment result, so a mistaken tag can never mask a worsening."""
    return lab.baseline and (window is None or utc(lab.collected_at) < window.start)


def _baselines(state: SubjectState, window: DltWindow | None) -> dict[str, int]:
    """Per term, the grade of the latest active baseline result drawn before the first infusion."""
    inactive = state.inactive_ids("lab")
    found: dict[str, int] = {}
    for lab in state.labs:  # in collection order: the latest wins
        if lab.term and lab.grade is not None and lab.result_id not in inactive and _pre_dose(lab, window):
            found[lab.term] = lab.grade
    return found


def _verdicts(protocol: Protocol, state: SubjectState, window: DltWindow | None) -> list[_Verdict]:
    verdicts = []
    baselines = _baselines(state, window)
    for facts in ae_facts(state.ae_versions, inactive=state.inactive_ids("ae"), protocol=protocol):
        verdict = classify(facts, rules=protocol.dlt, window=window, baseline_grades=baselines)
        relatedness = facts.relatedness.value if facts.relatedness else None
        verdicts.append(
            _Verdict(
                facts.ae_id,
                facts.term,
                facts.grade,
                relatedness,
                facts.version,
                verdict.meets,
                verdict.criterion,
                verdict.reason,
                partial_date_range(facts.onset)[0] if facts.onset else None,
                active=facts.status is None,
                met=verdict.met,
            )
        )
    inactive_labs = state.inactive_ids("lab")
    points: dict[str, list[LabPoint]] = defaultdict(list)
    for lab in state.labs:
        if lab.term and lab.grade is not None and lab.result_id not in inactive_labs:
            points[lab.term].append(LabPoint(lab.result_id, lab.collected_at, lab.grade, _pre_dose(lab, window)))
    haem_terms = cytopenia_terms(protocol.dlt)
    for term in sorted(points):
        if term.casefold() not in haem_terms:
            continue
        finding = classify_labs(term, points[term], rules=protocol.dlt, window=window, baseline=baselines.get(term))
        key = lab_dlt_id_part(term)
        if finding is not None:
            drawn = next(p.collected_at for p in points[term] if p.result_id == finding.result_id)
            on = window.site_date(drawn) if window is not None else utc(drawn).date()
            verdicts.append(_Verdict(key, term, finding.grade, None, 1, True, finding.rule, finding.reason, on))
        elif key in state.records:
            verdicts.append(_Verdict(key, term, None, None, 1, False, None, f"'{term}' labs no longer meet a rule"))
    return verdicts


def _required_assessments(
    protocol: Protocol, state: SubjectState, window: DltWindow | None
) -> tuple[tuple[str, ...], datetime | None]:
    arm = protocol.arm(state.subject.arm) if state.subject.arm else None
    names = protocol.cohort.evaluable_requires_assessments
    if arm is not None and arm.evaluable_requires_assessments is not None:
        names = arm.evaluable_requires_assessments  # the arm's own: the visit at the end of its DLT period
    if not names or window is None:
        return tuple(names) if window is None else (), None
    required = [a for a in protocol.assessments if a.name in names]  # not the whole schedule (1-2 of 12 visits)
    visits = schedule(required, calendar=window.calendar)
    inactive_labs, inactive_aes = state.inactive_ids("lab"), state.inactive_ids("ae")
    lab_times = [lab.collected_at for lab in state.labs if lab.result_id not in inactive_labs]
    ae_times = [v.received_at for v in state.ae_versions if v.ae_id not in inactive_aes]
    inactive_reviews = state.inactive_ids("ae_review")
    reviews = [ReviewMark(r.assessed_at, r.visit) for r in state.ae_reviews if r.review_id not in inactive_reviews]
    evidence = protocol.ae_assessment.evidence
    missing = tuple(
        v.name
        for v in visits
        if missing_kinds(v, lab_times=lab_times, ae_times=ae_times, reviews=reviews, evidence=evidence)
    )
    return missing, max((v.due_until for v in visits), default=None)


def subject_facts(protocol: Protocol, state: SubjectState, window: DltWindow | None) -> SubjectFacts:
    subject = state.subject
    arm = protocol.arm(subject.arm) if subject.arm else None
    inactive_doses = state.inactive_ids("dose")
    given = len({d.dose_id for d in state.doses if d.dose_id not in inactive_doses})
    confirmed = [r for r in state.records.values() if r.state == DltState.CONFIRMED.value]
    suspected = [r for r in state.records.values() if r.state == DltState.SUSPECTED.value]
    missing, due = _required_assessments(protocol, state, window)
    row = state.outcome
    return SubjectFacts(
        subject_id=subject.subject_id,
        arm=subject.arm,
        enrolment_active=subject.subject_id not in state.inactive_ids("enrollment"),
        study_status=row.study_status if row is not None else "on_study",  # type: ignore[arg-type]
        infusions_planned=arm.infusions if arm else 0,
        infusions_given=given,
        window=window,
        missing_assessments=missing,
        assessments_due_by=due,
        dlt_confirmed=_events(confirmed),
        dlt_suspected=_events(suspected),
    )


def _events(records: Sequence[DltRecord]) -> int:
    """DLT events: a lab-based record of a term an AE-based record of the subject already covers is the same event."""
    ae_terms = {r.term.casefold() for r in records if not r.ae_id.startswith("lab:")}
    return sum(1 for r in records if not (r.ae_id.startswith("lab:") and r.term.casefold() in ae_terms))


def reassess_subject(
    session: Session,
    *,
    protocol: Protocol,
    trial_id: str,
    subject_id: str,
    source_event_id: str,
    now: datetime,
    signals_topic: str,
    state: SubjectState | None = None,
) -> Reassessed:
    """Re-run the DLT rules and the subject's 3+3 outcome from its own stored data; save once.

    `state`: the subject as the caller already loaded it (the consumer's batch loads its subjects together)."""
    result = Reassessed()
    state = state or load_subject_state(session, trial_id=trial_id, subject_id=subject_id)
    if state is None:
        return result
    window = subject_window(protocol, state)
    starts: list[date | None] = []
    for verdict in _verdicts(protocol, state, window):
        result.signals += _update_record(
            session, state, verdict, window=window, source_event_id=source_event_id, now=now, topic=signals_topic
        )
        record = state.records.get(verdict.key)
        if record is not None and record.state in (DltState.SUSPECTED.value, DltState.CONFIRMED.value):
            starts.append(verdict.on)
    facts = subject_facts(protocol, state, window)
    outcome = assess_subject(facts, rules=protocol.cohort, now=now)
    row = state.outcome or new_row(SubjectOutcomeRow, trial_id=trial_id, subject_id=subject_id, updated_at=now)
    before = _outcome_key(row)
    previous_arm = row.arm
    _store_outcome(row, outcome, facts=facts)
    row.first_dlt_on = None if not starts or None in starts else min(d for d in starts if d is not None)
    if _outcome_key(row) != before or state.outcome is None:
        row.revision += 1
        row.updated_at = now
        result.arms |= {a for a in (previous_arm, row.arm) if a is not None}
    _write_whole(row)
    session.add(row)
    state.outcome = row
    return result


def new_subject_outcome(protocol: Protocol, state: SubjectState, *, now: datetime) -> OutcomeFacts:
    """The outcome `reassess_subject` would store for a subject with nothing stored but its own row (its
    enrolment), without storing it: what the next enrolment's check reads of it. No DLT rule applies yet."""
    if state.doses or state.labs or state.ae_versions or state.records or state.outcome is not None:
        raise ValueError(f"subject {state.subject.subject_id} has stored data: reassess it")
    window = subject_window(protocol, state)
    facts = subject_facts(protocol, state, window)
    outcome = assess_subject(facts, rules=protocol.cohort, now=now)
    subject = state.subject
    row = new_row(SubjectOutcomeRow, trial_id=subject.trial_id, subject_id=subject.subject_id, updated_at=now)
    _store_outcome(row, outcome, facts=facts)
    return OutcomeFacts.of(row)


def _outcome_key(row: SubjectOutcomeRow) -> tuple[object, ...]:
    return (row.arm, row.outcome, row.dlt_confirmed, row.dlt_suspected, row.evaluable_at)


OUTCOME_FIELDS = (
    "arm",
    "outcome",
    "dlt_confirmed",
    "dlt_suspected",
    "evaluable_at",
    "changes_at",
    "reason",
    "infusions_planned",
    "infusions_given",
)


def _store_outcome(row: SubjectOutcomeRow, outcome: SubjectOutcome, *, facts: SubjectFacts) -> None:
    assign(
        row,
        arm=outcome.arm,
        outcome=outcome.outcome,
        dlt_confirmed=outcome.dlt_confirmed,
        dlt_suspected=outcome.dlt_suspected,
        evaluable_at=outcome.evaluable_at,
        changes_at=outcome.changes_at,
        reason=outcome.reason[:2000],
        infusions_planned=facts.infusions_planned,
        infusions_given=facts.infusions_given,
    )


OUTCOME_WRITTEN = (*OUTCOME_FIELDS, "first_dlt_on", "revision", "updated_at")


def _write_whole(row: SubjectOutcomeRow) -> None:
    """A stored outcome that changed is written with all it was decided from, changed or not: every subject's
    UPDATE of a batch then has the same columns and goes as one statement, not one per set of changed columns
    (27 round trips for 50 subjects on PostgreSQL)."""
    state = inspect(row)
    if state.persistent and state.modified:
        for name in OUTCOME_WRITTEN:
            flag_modified(row, name)


def _update_record(
    session: Session,
    state: SubjectState,
    verdict: _Verdict,
    *,
    window: DltWindow | None,
    source_event_id: str,
    now: datetime,
    topic: str,
) -> list[Outgoing]:
    subject = state.subject
    trial_id, subject_id = subject.trial_id, subject.subject_id
    record = state.records.get(verdict.key)
    current = DltState(record.state) if record else None
    decision = decision_on_file(record) if record else None
    step = transition(
        current,
        Classification(verdict.meets, verdict.criterion, verdict.reason, verdict.met),
        grade=verdict.grade,
        decided_grade=record.decided_grade if record else None,
        decided_criterion=record.decided_criterion if record else None,
        rejected=decision == DltState.REJECTED.value,
        confirmed=decision == DltState.CONFIRMED.value,
        other_event=record is not None and is_other_event(record, verdict.term),
    )
    if step.state is None:
        return []
    previous_term = record.term if record else None
    if record is None:
        record = new_row(
            DltRecord,
            dlt_id=dlt_id_for(trial_id, subject_id, verdict.key),
            trial_id=trial_id,
            subject_id=subject_id,
            ae_id=verdict.key,
            state=step.state.value,
            term=verdict.term,
            ae_version=verdict.version,
            reason=verdict.reason,
            suspected_at=now,
            updated_at=now,
        )
        state.records[verdict.key] = record
    assign(
        record,
        arm=subject.arm,
        term=verdict.term[:500],
        relatedness=verdict.relatedness,
        ae_version=verdict.version,
        reason=verdict.reason[:2000],
        window_start=window.start if window else None,
        window_end=window.end if window else None,
    )
    if verdict.grade is not None or not verdict.key.startswith("lab:"):
        assign(record, grade=verdict.grade)
    if verdict.criterion is not None:
        assign(record, criterion=verdict.criterion)
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
                "ae_id": verdict.key,
                "ae_version": verdict.version,
                "reason": record.reason,
                "source_event_id": source_event_id,
            },
            now=now,
        )
    signals = _check_decision_basis(
        session,
        record,
        verdict,
        previous_term=previous_term,
        site_id=subject.site_id,
        source_event_id=source_event_id,
        now=now,
        topic=topic,
    )
    session.add(record)
    if step.signal is not None:
        why = None
        if current is DltState.SUSPECTED and step.state is DltState.CONFIRMED:  # the reopened suspicion ends
            by = record.decided_by or "an officer"
            if is_other_event(record, verdict.term):  # recoded again, to a third event of the confirmed criterion
                what = (
                    f"the AE, now reported as '{verdict.term}' (confirmed by {by} as '{record.decided_term}'), meets "
                    f"the criterion '{record.decided_criterion}' the confirmation judged"
                )
            else:
                what = f"the AE is again the event confirmed by {by}, or meets no other criterion"
            why = (
                f"{what}: the confirmation stands again and the DLT counts in arm {record.arm or 'unknown'}'s "
                f"3+3 tally as confirmed ({record.reason})"
            )
        signals.insert(
            0,
            _dlt_signal(
                step.signal,
                record,
                site_id=subject.site_id,
                source_event_id=source_event_id,
                now=now,
                topic=topic,
                reason=why,
            ),
        )
    return signals


def _check_decision_basis(
    session: Session,
    record: DltRecord,
    verdict: _Verdict,
    *,
    previous_term: str | None,
    site_id: str,
    source_event_id: str,
    now: datetime,
    topic: str,
) -> list[Outgoing]:
    """A decided DLT whose data moved against (or back to) what the decision relied on: stored, audited, and the
    officers told once (dlt_decision_basis). Undecided records pass through untouched, with no work."""
    if record.decided_at is None:
        return []
    check = check_basis(record, verdict.look(), previous_term=previous_term)
    stored = check.divergence.value if check.divergence else None
    if stored != record.divergence:
        record.divergence = stored
    if check.finding is None:
        return []
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=SYSTEM_ACTOR,
        action="dlt.basis_changed",
        entity=f"dlt/{record.dlt_id}",
        detail={
            "state": record.state,
            "divergence": stored,
            "subject_id": record.subject_id,
            "ae_id": record.ae_id,
            "ae_version": verdict.version,
            "reason": check.finding.detail,
            "source_event_id": source_event_id,
        },
        now=now,
    )
    return [
        _finding(
            signal_id=deterministic_id("signal", source_event_id, "data_quality", check.finding.code, record.dlt_id),
            trial_id=record.trial_id,
            subject_id=record.subject_id,
            site_id=site_id,
            record_type="lab" if record.ae_id.startswith("lab:") else "ae",
            record_id=record.ae_id,
            code=check.finding.code,
            detail=check.finding.detail[:2000],
            source_event_id=source_event_id,
            now=now,
            topic=topic,
        )
    ]


def _finding(
    *,
    signal_id: str,
    trial_id: str,
    subject_id: str,
    site_id: str,
    record_type: str,
    record_id: str,
    code: str,
    detail: str,
    source_event_id: str,
    now: datetime,
    topic: str,
) -> Outgoing:
    """A data-quality finding about one of the subject's records, as the signal that carries it to notify."""
    data = DataQualityData(
        site_id=site_id,
        subject_id=subject_id,
        record_type=record_type,
        record_id=record_id,
        code=code,
        detail=detail,
        source_event_id=source_event_id,
    )
    signal = DataQualityFlagged(
        id=signal_id, source=SIGNAL_SOURCE, subject=subject_id, time=now, trialid=trial_id, data=data
    )
    return Outgoing(topic=topic, key=message_key(trial_id, subject_id), envelope=signal)


def unmapped_term_flags(
    *,
    envelope_id: str,
    protocol: Protocol,
    trial_id: str,
    subject_id: str,
    site_id: str,
    data: AeData,
    now: datetime,
    topic: str,
) -> list[Outgoing]:
    """An AE whose term maps to no CTCAE term: a data-quality finding for the site (once per AE version)."""
    mapping = map_ae_term(
        data.term, ctcae_term=data.ctcae_term, meddra_code=data.meddra_code, synonyms=protocol.dlt.synonyms
    )
    if mapping.mapped:
        return []
    detail = (
        f"{mapping.detail}: the DLT rules cannot tell whether it is haematological or an infusion reaction;"
        " it is judged only by the criteria that name no terms until the site codes it"
    )
    return [
        _finding(
            signal_id=deterministic_id("signal", envelope_id, "data_quality.flagged", UNMAPPED_TERM),
            trial_id=trial_id,
            subject_id=subject_id,
            site_id=site_id,
            record_type="ae",
            record_id=f"{data.ae_id}/v{data.version}",
            code=UNMAPPED_TERM,
            detail=detail,
            source_event_id=envelope_id,
            now=now,
            topic=topic,
        )
    ]


def _dlt_signal(
    kind: DltSignal,
    record: DltRecord,
    *,
    site_id: str,
    source_event_id: str,
    now: datetime,
    topic: str,
    reason: str | None = None,
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
        reason=reason or record.reason,
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


def _tallies_from_rows(rows: Iterable[CohortState]) -> dict[str, ArmTally]:
    return {
        row.arm: ArmTally(
            arm=row.arm,
            enrolled=row.enrolled,
            evaluable=row.evaluable,
            not_evaluable=row.not_evaluable,
            under_review=row.under_review,
            subjects_confirmed=row.subjects_confirmed,
            subjects_suspected=row.subjects_suspected,
            events_confirmed=row.events_confirmed,
            events_suspected=row.events_suspected,
        )
        for row in rows
    }


def current_arms(session: Session, *, protocol: Protocol) -> TrialAssessment:
    """The arms as last stored (tallies from the subjects' stored outcomes), decided now."""
    rows = subject_store.cohort_states(session, trial_id=protocol.trial_id)
    return assess_trial(protocol, _tallies_from_rows(rows.values()))


def reassess_cohorts(
    session: Session,
    *,
    protocol: Protocol,
    now: datetime,
    source_id: str,
    signals_topic: str,
    arms: Collection[str] | None = None,
) -> list[Outgoing]:
    """Re-tally `arms` (None: every arm) from their subjects' stored outcomes, re-decide every arm from the stored
    tallies; signal a changed decision, the stopping rule when it newly fires, and a changed recommended dose."""
    trial_id = protocol.trial_id
    stored = subject_store.cohort_states(session, trial_id=trial_id)
    wanted = [a.id for a in protocol.arms] if arms is None else [a.id for a in protocol.arms if a.id in arms]
    tallies = _tallies_from_rows(stored.values())
    tallies.update(subject_store.arm_tallies(session, trial_id=trial_id, arms=wanted))
    assessed = assess_trial(protocol, tallies)
    signals: list[Outgoing] = []
    for arm in assessed.arms:
        t = tallies.get(arm.arm) or ArmTally(arm.arm)
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
        row.not_evaluable, row.replacements_needed, row.under_review = (
            t.not_evaluable,
            arm.replacements_needed,
            t.under_review,
        )
        row.subjects_confirmed, row.subjects_suspected = t.subjects_confirmed, t.subjects_suspected
        row.events_confirmed, row.events_suspected = t.events_confirmed, t.events_suspected
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
                detail={**data.model_dump(mode="json"), "source_id": source_id},
                now=now,
            )
            for kind, fired in (("cohort.decision", changed), ("stopping_rule.fired", fires)):
                if fired:
                    signals.append(_cohort_signal(kind, data, trial_id, row.revision, source_id, now, signals_topic))
        session.add(row)
    signals += _recommendation_signal(session, protocol, assessed, now=now, source_id=source_id, topic=signals_topic)
    return signals


def _recommendation_signal(
    session: Session, protocol: Protocol, assessed: TrialAssessment, *, now: datetime, source_id: str, topic: str
) -> list[Outgoing]:
    trial_id = protocol.trial_id
    found: Recommendation | None = assessed.recommendation
    row = subject_store.recommendation(session, trial_id=trial_id)
    if row is None and found is None:
        return []
    if row is not None and found is not None and (row.recommended_arm, row.basis) == (found.arm, found.basis):
        return []
    if row is not None and found is None and row.basis == "withdrawn":
        return []
    previous_arm = row.recommended_arm if row is not None else None
    if found is None:
        found = Recommendation(
            None, "withdrawn", f"the recommendation of arm {previous_arm} no longer holds: later data reopened it"
        )
    row = row or DoseRecommendationRow(trial_id=trial_id, basis=found.basis, updated_at=now)
    row.recommended_arm, row.basis, row.reason = found.arm, found.basis, found.reason[:2000]
    row.revision += 1
    row.updated_at = now
    session.add(row)
    data = DoseRecommendationData(
        recommended_arm=found.arm,
        basis=found.basis,
        previous_arm=previous_arm,
        reason=found.reason,
        arms=[_cohort_data(a, previous=None) for a in assessed.arms],
    )
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=SYSTEM_ACTOR,
        action="dose.recommended",
        entity=f"trial/{trial_id}",
        detail={**data.model_dump(mode="json"), "source_id": source_id},
        now=now,
    )
    signal = DoseRecommended(
        id=deterministic_id("signal", source_id, "dose.recommended", trial_id, str(row.revision)),
        source=SIGNAL_SOURCE,
        subject="trial",
        time=now,
        trialid=trial_id,
        data=data,
    )
    return [Outgoing(topic=topic, key=message_key(trial_id, "trial"), envelope=signal)]


def _cohort_data(arm: ArmAssessment, *, previous: str | None) -> CohortData:
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
        not_evaluable=arm.not_evaluable,
        replacements_needed=arm.replacements_needed,
        stopping=arm.stopping,
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


class OutcomeFacts(NamedTuple):
    """What the enrolment check reads of a subject's stored outcome: plain values, taken once per batch (an
    enrolment reads every other subject's)."""

    subject_id: str
    arm: str | None
    outcome: str
    dlt_confirmed: int
    dlt_suspected: int
    evaluable_at: datetime | None
    first_dlt_on: date | None
    as_stored: SubjectOutcome
    """The outcome as stored, for the tallies of every enrolment it did not change by then (most of them): built
    once per batch, not once per other subject per enrolment (5,000 per batch of 50 enrolments in 100 subjects)."""

    @classmethod
    def of(cls, row: SubjectOutcomeRow) -> OutcomeFacts:
        return cls(
            row.subject_id,
            row.arm,
            row.outcome,
            row.dlt_confirmed,
            row.dlt_suspected,
            None if row.evaluable_at is None else utc(row.evaluable_at),
            row.first_dlt_on,
            SubjectOutcome(row.subject_id, row.arm, row.outcome, row.dlt_confirmed, row.dlt_suspected),  # type: ignore[arg-type]
        )


def _as_of(row: OutcomeFacts, at: datetime, *, enrolled_on: date) -> SubjectOutcome:
    """A stored outcome as it stood when a subject was enrolled on `enrolled_on` (judged at `at`): a
    subject evaluable only later was still pending then, and DLTs that began on or after that date were not yet
    known (their onset is clinical time, so a replay judges the same way; an unknown onset counts)."""
    outcome = row.outcome
    if outcome == "evaluable" and row.evaluable_at is not None and row.evaluable_at > at:
        return SubjectOutcome(row.subject_id, row.arm, "pending", row.dlt_confirmed, row.dlt_suspected)
    if outcome in ("dlt", "under_review") and row.first_dlt_on is not None and row.first_dlt_on >= enrolled_on:
        return SubjectOutcome(row.subject_id, row.arm, "pending", 0, 0)
    return row.as_stored


def check_enrolment(
    session: Session,
    *,
    protocol: Protocol,
    envelope: SubjectEnrolled,
    now: datetime,
    signals_topic: str,
    outcomes: Iterable[OutcomeFacts] | None = None,
) -> list[Outgoing]:
    """Deviations of this enrolment, judged on the arms as they stood when the enrolment day began.

    The enrolment has a date but no time, so the check is judged at a fixed instant, never at `now`: the
    first moment of the enrolment date anywhere (00:00 at UTC+14), from the subjects' stored outcomes (a
    subject evaluable only after that instant was still pending then). A replay long after the fact then gives
    nearly the same answer as live processing (DLT reviews are taken as they stand now), and the earliest
    instant is the conservative one. Subjects of other arms arrive on other partitions, so a predecessor's data
    still in flight can make a deviation look real (the officer reviews each one). `outcomes`: every subject's
    stored outcome row as the caller holds them (a consumer batch reads them once, not per enrolment).
    """
    judged_at = start_of_day_everywhere(envelope.data.enrolled_at)
    rows = outcomes if outcomes is not None else outcome_facts(session, trial_id=protocol.trial_id)
    others: dict[str, list[SubjectOutcome]] = defaultdict(list)  # by arm: each arm's tally reads its own
    for row in rows:
        if row.subject_id != envelope.subject and row.arm is not None:
            others[row.arm].append(_as_of(row, judged_at, enrolled_on=envelope.data.enrolled_at))
    tallies = {arm.id: tally(arm.id, others[arm.id]) for arm in protocol.arms}
    arms = assess_trial(protocol, tallies).by_arm()
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
                pages=deviation.pages,
            ),
        )
        signals.append(
            Outgoing(topic=signals_topic, key=message_key(envelope.trialid, envelope.subject), envelope=signal)
        )
    return signals


def outcome_facts(session: Session, *, trial_id: str) -> list[OutcomeFacts]:
    return [OutcomeFacts.of(row) for row in subject_store.outcome_rows(session, trial_id=trial_id)]


DEATH_WITHOUT_FATAL_AE = "death_without_fatal_ae"


def death_without_fatal_ae(
    session: Session, *, envelope: SubjectStatusChanged, now: datetime, topic: str
) -> list[Outgoing]:
    """A death reported as a disposition with no fatal AE on record: no SAE clock and no grade 5 DLT can start
    from it, so the site must report the AE; a data-quality finding for the site contact."""
    if envelope.data.status != "died":
        return []
    if subject_store.has_fatal_ae(session, trial_id=envelope.trialid, subject_id=envelope.subject):
        return []
    on = envelope.data.effective_on.isoformat() if envelope.data.effective_on else "an unreported date"
    detail = (
        f"the subject died on {on} but no AE with a fatal outcome (grade 5 or seriousness 'death') is on"
        " record: report the AE that led to death, so its SAE clock and the DLT rules can apply"
    )
    return [
        _finding(
            signal_id=deterministic_id("signal", envelope.id, "data_quality.flagged", DEATH_WITHOUT_FATAL_AE),
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            site_id=envelope.siteid,
            record_type="subject_status",
            record_id=envelope.id,
            code=DEATH_WITHOUT_FATAL_AE,
            detail=detail,
            source_event_id=envelope.id,
            now=now,
            topic=topic,
        )
    ]


def record_subject_status(session: Session, *, envelope: SubjectStatusChanged, now: datetime) -> bool:
    """Store the subject's study status (withdrawn, lost to follow-up, died, completed, on study) on its outcome row."""
    key = (envelope.trialid, envelope.subject)
    row = session.get(SubjectOutcomeRow, key) or new_row(
        SubjectOutcomeRow, trial_id=envelope.trialid, subject_id=envelope.subject, updated_at=now
    )
    data = envelope.data
    new = (data.status, data.effective_on, data.reason)
    if (row.study_status, row.study_status_on, row.study_status_reason) == new and row.study_status_event_id:
        return False
    row.study_status, row.study_status_on, row.study_status_reason = new
    row.study_status_event_id = envelope.id
    session.add(row)
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=SYSTEM_ACTOR,
        action=f"subject.{data.status}",
        entity=f"subject/{envelope.trialid}/{envelope.subject}",
        detail={
            "effective_on": data.effective_on.isoformat() if data.effective_on else None,
            "reason": data.reason,
            "source_event_id": envelope.id,
        },
        now=now,
    )
    return True


class UnknownDlt(LookupError):
    pass


def _decision_revised(record: DltRecord, expected_state: DltState | None) -> bool:
    """Whether this decision revises one already made; a decided DLT is revised only when the officer named the
    decision they reverse, otherwise the decision is a conflict."""
    if record.state not in (DltState.CONFIRMED.value, DltState.REJECTED.value):
        return False
    if expected_state is None or expected_state.value != record.state:
        raise DltAlreadyDecided(record)
    return True


def _refuse_a_retracted_ae(session: Session, record: DltRecord) -> None:
    """A revision to confirmed must rest on an AE the site still stands by: once the site marked it entered in error
    or deleted, the arm would count an event that did not happen to this subject, and no finding would tell anyone
    (the retraction came before the confirmation). The site restores the AE first; the revision then goes through."""
    status = session.get(RecordStatus, (record.trial_id, record.subject_id, "ae", record.ae_id))
    if status is not None and status.status in subject_store.INACTIVE:
        why = f" ({status.reason})" if status.reason else ""
        raise DltStateChanged(
            record,
            f"DLT {record.dlt_id} cannot be confirmed: the site marked AE {record.ae_id} "
            f"{status.status.replace('_', ' ')}{why}. Ask the site to restore the AE in the EDC if the event did "
            "happen to this subject, then revise the decision.",
        )


def _look_of(protocol: Protocol, state: SubjectState | None, record: DltRecord) -> DataLook | None:
    """The record's AE (or labs) as the DLT rules judge them now."""
    if state is None:
        return None
    window = subject_window(protocol, state)
    return next((v.look() for v in _verdicts(protocol, state, window) if v.key == record.ae_id), None)


def _keep_decision_basis(record: DltRecord, look: DataLook | None) -> None:
    """What the officer decided on, for dlt_decision_basis: the data the officer saw, so nothing diverges yet."""
    record.decided_relatedness = look.relatedness if look else record.relatedness
    record.decided_met = look.meets and look.active if look else record.state == DltState.SUSPECTED.value
    record.divergence = None


class DltAlreadyDecided(Exception):
    def __init__(self, record: DltRecord) -> None:
        super().__init__(
            f"DLT {record.dlt_id} was already {record.state} by {record.decided_by} at "
            f"{record.decided_at.isoformat() if record.decided_at else 'an unknown time'}. To revise that decision "
            f'(the review committee re-adjudicated it), send "expected_state": "{record.state}" with the reason.'
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
    expected_revision: int | None = None,
) -> DecisionOutcome:
    """An officer confirms or rejects a DLT; the same decision again is a no-op, a different one a conflict.

    The officer decides about the DLT as they saw it: with `expected_state`, a DLT that has moved since
    (a follow-up withdrew it) is a conflict. Without it, confirming a withdrawn DLT is refused: the current
    data no longer meet a criterion, so the officer must say they confirm it as withdrawn.

    A decided DLT is revised only on purpose: the other decision with `expected_state` naming the decision it
    reverses (a committee re-adjudicating, or a slip corrected). It is audited as `dlt.revised` with the decision
    it replaces, signalled with `revises`, and the subject's outcome and the arm's 3+3 are reassessed, as for any
    decision. Without `expected_state` it stays a conflict: a second officer's click never silently undoes the first.
    `expected_revision` (the record's revision the officer saw) also refuses a page older than the last change,
    which the state alone cannot tell after two revisions (confirmed -> rejected -> confirmed).
    """
    record = session.get(DltRecord, dlt_id, with_for_update=True)
    if record is None or record.trial_id != protocol.trial_id:
        raise UnknownDlt(dlt_id)
    if record.state == decision:
        return DecisionOutcome(record, False, [])
    if expected_revision is not None and record.revision != expected_revision:
        by = f" by {record.decided_by}" if record.decided_by else ""
        raise DltStateChanged(
            record,
            f"DLT {dlt_id} has changed since revision {expected_revision} that the decision was made about: it is "
            f"now {record.state}{by} (revision {record.revision}). Review the current state and decide again.",
        )
    revised = _decision_revised(record, expected_state)
    if revised and decision == "confirmed":
        _refuse_a_retracted_ae(session, record)
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
    replaced = {
        "decision": previous,
        "decided_by": record.decided_by,
        "decided_at": record.decided_at.isoformat() if record.decided_at else None,
        "reason": record.decision_reason,
    }
    record.state = decision
    record.revision += 1
    record.decided_by = actor
    record.decided_at = now
    record.decision_reason = reason
    record.decided_grade = record.grade
    record.decided_criterion = record.criterion
    record.decided_state, record.decided_term = decision, record.term
    state = load_subject_state(session, trial_id=record.trial_id, subject_id=record.subject_id)
    _keep_decision_basis(record, _look_of(protocol, state, record))
    record.updated_at = now
    session.add(record)
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=actor,
        action="dlt.revised" if revised else f"dlt.{decision}",
        entity=f"dlt/{dlt_id}",
        detail={
            "previous_state": previous,
            "decision": decision,
            **({"revises": replaced} if revised else {}),
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
            revises=previous if revised else None,
        ),
    )
    session.flush()
    signals = [Outgoing(topic=signals_topic, key=message_key(record.trial_id, record.subject_id), envelope=signal)]
    subject = reassess_subject(
        session,
        protocol=protocol,
        trial_id=record.trial_id,
        subject_id=record.subject_id,
        source_event_id=f"{dlt_id}/{record.revision}",
        now=now,
        signals_topic=signals_topic,
        state=state,
    )
    signals += subject.signals
    if subject.arms:
        signals += reassess_cohorts(
            session,
            protocol=protocol,
            now=now,
            source_id=f"{dlt_id}/{record.revision}",
            signals_topic=signals_topic,
            arms=subject.arms,
        )
    return DecisionOutcome(record, True, signals)
