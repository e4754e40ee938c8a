"""Queries of the protocol engine: one subject's stored state in one go, arm tallies, time-due subjects.

Keyword-only; never commit (the caller's transaction does).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from services.safety.cohort import ArmTally
from services.safety.models import (
    AeReview,
    AeSeriousness,
    AeVersion,
    CohortState,
    DltRecord,
    Dose,
    DoseRecommendationRow,
    LabResult,
    LabTermState,
    RecordStatus,
    ResponseStateRow,
    Subject,
    SubjectOutcomeRow,
    TransfusionRecord,
)
from shared.db import one_of

INACTIVE = frozenset({"entered_in_error", "deleted"})


class LabFacts(NamedTuple):
    """A stored result as a subject's reassessment reads it: columns, not an ORM instance. A reassessment reads
    all of the subject's results, so what one costs to load bounds a batch."""

    result_id: str
    test: str | None
    loinc: str | None
    value: str
    unit: str | None
    uln: str | None
    collected_at: datetime
    baseline: bool
    term: str | None
    grade: int | None


LAB_COLUMNS = tuple(getattr(LabResult, name) for name in LabFacts._fields)


class AeVersionFacts(NamedTuple):
    """A stored AE version as a subject's reassessment reads it (columns, like `LabFacts`)."""

    ae_id: str
    version: int
    payload: dict[str, Any]
    received_at: datetime


AE_VERSION_COLUMNS = tuple(getattr(AeVersion, name) for name in AeVersionFacts._fields)


@dataclass
class SubjectState:
    """Everything the DLT and 3+3 rules need about one subject, loaded once per event."""

    subject: Subject
    doses: list[Dose]
    labs: list[LabFacts]
    ae_versions: list[AeVersionFacts]
    baselines: dict[str, int]
    inactive: dict[tuple[str, str], str]
    """(record_type, record_id) -> status of records the site took back."""
    records: dict[str, DltRecord]
    outcome: SubjectOutcomeRow | None
    ae_reviews: list[AeReview] = field(default_factory=list)
    """The site's AE review records (visit AE assessments)."""
    transfusions: list[TransfusionRecord] = field(default_factory=list)
    response_rows: list[ResponseStateRow] = field(default_factory=list)

    @classmethod
    def of_new(cls, subject: Subject) -> SubjectState:
        """A subject just created, with nothing stored about it yet but its own row."""
        return cls(
            subject=subject, doses=[], labs=[], ae_versions=[], baselines={}, inactive={}, records={}, outcome=None
        )

    def inactive_ids(self, record_type: str) -> dict[str, str]:
        return {rid: status for (kind, rid), status in self.inactive.items() if kind == record_type}


def load_subject_state(session: Session, *, trial_id: str, subject_id: str) -> SubjectState | None:
    return load_subject_states(session, trial_id=trial_id, subject_ids=[subject_id]).get(subject_id)


Row = TypeVar("Row", bound=Any)
CHUNK = 500
"""Subjects per IN list: well under SQLite's and PostgreSQL's parameter limits."""


def load_subject_states(session: Session, *, trial_id: str, subject_ids: Iterable[str]) -> dict[str, SubjectState]:
    """Several subjects' stored state in one query per table (the consumer's batch reassesses them together)."""
    wanted = sorted(set(subject_ids))
    states: dict[str, SubjectState] = {}
    for start in range(0, len(wanted), CHUNK):
        states.update(_load_chunk(session, trial_id=trial_id, subject_ids=wanted[start : start + CHUNK]))
    return states


def _rows(session: Session, model: type[Row], *, trial_id: str, subject_ids: Sequence[str]) -> dict[str, list[Row]]:
    query = select(model).where(model.trial_id == trial_id, one_of(session, col(model.subject_id), subject_ids))
    found: dict[str, list[Row]] = defaultdict(list)
    for row in session.exec(query):
        found[row.subject_id].append(row)
    return found


def _load_chunk(session: Session, *, trial_id: str, subject_ids: Sequence[str]) -> dict[str, SubjectState]:
    def rows(model: type[Row]) -> dict[str, list[Row]]:
        return _rows(session, model, trial_id=trial_id, subject_ids=subject_ids)

    def columns(*selected: Any) -> dict[str, list[Any]]:
        """Plain values of a table the state only reads (no ORM row to build, track and look up)."""
        model = selected[0].class_
        query = select(model.subject_id, *selected).where(
            model.trial_id == trial_id, one_of(session, col(model.subject_id), subject_ids)
        )
        found: dict[str, list[Any]] = defaultdict(list)
        for row in session.exec(query):
            found[row[0]].append(row[1:])
        return found

    subjects = rows(Subject)
    if not subjects:
        return {}
    statuses = columns(RecordStatus.record_type, RecordStatus.record_id, RecordStatus.status)
    doses = rows(Dose)
    labs: dict[str, list[LabFacts]] = defaultdict(list)
    query = select(LabResult.subject_id, *LAB_COLUMNS).where(
        LabResult.trial_id == trial_id, one_of(session, col(LabResult.subject_id), subject_ids)
    )
    for row in session.exec(query):
        labs[row[0]].append(LabFacts._make(row[1:]))
    versions: dict[str, list[AeVersionFacts]] = defaultdict(list)
    query = select(AeVersion.subject_id, *AE_VERSION_COLUMNS).where(
        AeVersion.trial_id == trial_id, one_of(session, col(AeVersion.subject_id), subject_ids)
    )
    for row in session.exec(query):
        versions[row[0]].append(AeVersionFacts._make(row[1:]))
    terms = columns(LabTermState.term, LabTermState.baseline_grade)
    records = rows(DltRecord)
    outcomes = rows(SubjectOutcomeRow)
    reviews = rows(AeReview)
    transfusions = rows(TransfusionRecord)
    responses = rows(ResponseStateRow)
    return {
        subject_id: SubjectState(
            subject=rows[0],
            doses=sorted(doses[subject_id], key=lambda d: d.administered_at),
            labs=sorted(labs[subject_id], key=lambda lab: lab.collected_at),
            ae_versions=sorted(versions[subject_id], key=lambda v: (v.ae_id, v.version)),
            baselines={term: grade for term, grade in terms[subject_id] if grade is not None},
            inactive={(kind, rid): status for kind, rid, status in statuses[subject_id] if status in INACTIVE},
            records={r.ae_id: r for r in records[subject_id]},
            outcome=next(iter(outcomes[subject_id]), None),
            ae_reviews=reviews[subject_id],
            transfusions=transfusions[subject_id],
            response_rows=responses[subject_id],
        )
        for subject_id, rows in subjects.items()
    }


def arm_tallies(session: Session, *, trial_id: str, arms: Collection[str]) -> dict[str, ArmTally]:
    """Sum these arms' stored subject outcomes, one aggregate per arm over its rows (one query; never a trial
    rescan). An arm with no subject is an empty tally."""
    row = SubjectOutcomeRow
    counted = col(row.outcome) != "excluded"

    def count_if(condition: object) -> object:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)  # type: ignore[arg-type]

    query = (
        select(  # type: ignore[call-overload]
            row.arm,
            count_if(counted),
            count_if(col(row.outcome).in_(["evaluable", "dlt"])),
            count_if(col(row.outcome) == "not_evaluable"),
            count_if(col(row.outcome) == "under_review"),
            count_if(counted & (col(row.dlt_confirmed) > 0)),
            count_if(counted & (col(row.dlt_confirmed) == 0) & (col(row.dlt_suspected) > 0)),
            func.coalesce(func.sum(case((counted, row.dlt_confirmed), else_=0)), 0),
            func.coalesce(func.sum(case((counted, row.dlt_suspected), else_=0)), 0),
        )
        .where(row.trial_id == trial_id, col(row.arm).in_(sorted(arms)))
        .group_by(row.arm)
    )
    found = {arm: ArmTally(arm, *(int(v) for v in values)) for arm, *values in session.exec(query)}
    return {arm: found.get(arm, ArmTally(arm)) for arm in arms}


def cohort_states(session: Session, *, trial_id: str) -> dict[str, CohortState]:
    """Locked on PostgreSQL: the consumer, the sweep and an officer's decision may reassess at once."""
    query = select(CohortState).where(CohortState.trial_id == trial_id).with_for_update()
    return {row.arm: row for row in session.exec(query)}


def outcome_rows(session: Session, *, trial_id: str) -> list[SubjectOutcomeRow]:
    """Every subject's stored outcome (small rows; used for the enrolment check only)."""
    return list(session.exec(select(SubjectOutcomeRow).where(SubjectOutcomeRow.trial_id == trial_id)))


def subjects_due(session: Session, *, trial_id: str, now: datetime) -> list[str]:
    """Subjects whose outcome changes by time alone at or before `now`."""
    query = select(SubjectOutcomeRow.subject_id).where(
        SubjectOutcomeRow.trial_id == trial_id,
        col(SubjectOutcomeRow.changes_at).is_not(None),
        col(SubjectOutcomeRow.changes_at) <= now,
    )
    return sorted(session.exec(query))


def subjects_without_outcome(session: Session, *, trial_id: str, limit: int = 500) -> list[str]:
    """Subjects stored before outcome rows existed (an upgraded database): the sweep assesses them once."""
    query = (
        select(Subject.subject_id)
        .outerjoin(
            SubjectOutcomeRow,
            (SubjectOutcomeRow.trial_id == Subject.trial_id) & (SubjectOutcomeRow.subject_id == Subject.subject_id),  # type: ignore[arg-type]
        )
        .where(Subject.trial_id == trial_id, col(SubjectOutcomeRow.subject_id).is_(None))
        .order_by(col(Subject.subject_id))
        .limit(limit)
    )
    return list(session.exec(query))


def has_fatal_ae(session: Session, *, trial_id: str, subject_id: str) -> bool:
    """Any AE of the subject graded 5 or serious by death, in any version (folded seriousness)."""
    query = select(AeSeriousness).where(AeSeriousness.trial_id == trial_id, AeSeriousness.subject_id == subject_id)
    return any(row.max_grade == 5 or "death" in row.criteria for row in session.exec(query))


def recommendation(session: Session, *, trial_id: str) -> DoseRecommendationRow | None:
    return session.get(DoseRecommendationRow, trial_id, with_for_update=True)
