"""Safety's own tables: subjects, doses, labs, every AE version, each AE's folded seriousness, record statuses,
DLT records, cohort (3+3) state and flagged missed assessments."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from shared.audit import AuditEntry
from shared.db import UTCDateTime


class Subject(SQLModel, table=True):
    __tablename__ = "safety_subjects"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    site_id: str = Field(max_length=200)
    arm: str | None = Field(default=None, max_length=40)
    enrolled_at: date | None = None


class Dose(SQLModel, table=True):
    __tablename__ = "safety_doses"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    dose_id: str = Field(primary_key=True, max_length=200)
    number: int
    administered_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    administered_on: date | None = None
    """The calendar date at the site (the sender's UTC offset): study day 1 when this is the first infusion."""
    cells_per_kg: str | None = Field(default=None, max_length=40)


class LabResult(SQLModel, table=True):
    __tablename__ = "safety_labs"
    __table_args__ = (
        # A result's baseline (same test) and a term's results are found without reading all the subject's labs.
        Index("ix_safety_labs_test", "trial_id", "subject_id", "test", "collected_at"),
        Index("ix_safety_labs_term", "trial_id", "subject_id", "term", "collected_at"),
    )

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    result_id: str = Field(primary_key=True, max_length=200)
    test: str | None = Field(default=None, max_length=40)
    loinc: str | None = Field(default=None, max_length=20)
    value: str = Field(max_length=40)
    unit: str | None = Field(default=None, max_length=40)
    lln: str | None = Field(default=None, max_length=40)
    uln: str | None = Field(default=None, max_length=40)
    collected_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    baseline: bool = False
    term: str | None = Field(default=None, max_length=200)
    grade: int | None = None
    grade_reason: str = Field(default="", max_length=1000)


class LabTermState(SQLModel, table=True):
    """Per subject and CTCAE term: the baseline grade and the worst grade already signalled."""

    __tablename__ = "safety_lab_terms"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    term: str = Field(primary_key=True, max_length=200)
    baseline_grade: int | None = None
    baseline_collected_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    signalled_grade: int | None = None


class AeVersion(SQLModel, table=True):
    """Every version of every AE as received: the audit of what the site said, and when we heard it."""

    __tablename__ = "safety_ae_versions"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    ae_id: str = Field(primary_key=True, max_length=200)
    version: int = Field(primary_key=True)
    event_id: str = Field(max_length=64)
    payload: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class AeSeriousness(SQLModel, table=True):
    """The folded state of one AE across its versions (see sae.assess_ae)."""

    __tablename__ = "safety_ae_seriousness"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    ae_id: str = Field(primary_key=True, max_length=200)
    criteria: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    max_grade: int | None = None
    latest_version: int
    outcome: str | None = Field(default=None, max_length=100)
    awareness_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    awareness_basis: str | None = Field(default=None, max_length=20)
    first_serious_version: int | None = None


class RecordStatus(SQLModel, table=True):
    """A site's status for one record (entered in error, deleted, restored): rows are never deleted.

    The record may arrive after its status; lookups are by (record_type, record_id), so both orders work.
    For an enrolment, record_id is the subject.
    """

    __tablename__ = "safety_record_status"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    record_type: str = Field(primary_key=True, max_length=20)
    record_id: str = Field(primary_key=True, max_length=200)
    status: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=1000)
    changed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    event_id: str = Field(max_length=64)


class DltRecord(SQLModel, table=True):
    """One AE's DLT review: suspected by the rule, confirmed or rejected by an officer, or withdrawn."""

    __tablename__ = "safety_dlts"

    dlt_id: str = Field(primary_key=True, max_length=64)
    trial_id: str = Field(max_length=64, index=True)
    subject_id: str = Field(max_length=200, index=True)
    ae_id: str = Field(max_length=200)
    arm: str | None = Field(default=None, max_length=40)
    state: str = Field(max_length=20)
    criterion: str | None = Field(default=None, max_length=80)
    term: str = Field(max_length=500)
    grade: int | None = None
    relatedness: str | None = Field(default=None, max_length=20)
    ae_version: int
    reason: str = Field(max_length=2000)
    window_start: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    window_end: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    suspected_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revision: int = 1
    """Counts state changes: part of the ids of signals that have no single source event."""
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    decision_reason: str | None = Field(default=None, max_length=2000)
    decided_grade: int | None = None


class CohortState(SQLModel, table=True):
    """The last 3+3 decision signalled for an arm, so a signal goes out only when it changes."""

    __tablename__ = "safety_cohorts"

    trial_id: str = Field(primary_key=True, max_length=64)
    arm: str = Field(primary_key=True, max_length=40)
    decision: str = Field(max_length=20)
    stopping: bool = False
    enrolled: int = 0
    evaluable: int = 0
    dlt_confirmed: int = 0
    dlt_suspected: int = 0
    reason: str = Field(default="", max_length=2000)
    revision: int = 0
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class MissedAssessment(SQLModel, table=True):
    """A scheduled assessment flagged as missed: the key makes the sweep's signal a one-off."""

    __tablename__ = "safety_missed_assessments"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    assessment: str = Field(primary_key=True, max_length=80)
    due_from: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    due_until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    missing: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    flagged_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# The audit chain is shared code, but safety writes it in its own transactions, so it creates it too.
TABLES = [
    Subject,
    Dose,
    LabResult,
    LabTermState,
    AeVersion,
    AeSeriousness,
    RecordStatus,
    DltRecord,
    CohortState,
    MissedAssessment,
    AuditEntry,
]
