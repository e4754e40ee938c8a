"""Safety's own tables: subjects, doses, labs, every AE version, and each AE's folded seriousness."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

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
    cells_per_kg: str | None = Field(default=None, max_length=40)


class LabResult(SQLModel, table=True):
    __tablename__ = "safety_labs"

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


TABLES = [Subject, Dose, LabResult, LabTermState, AeVersion, AeSeriousness]
