"""Safety's own tables: subjects, doses, labs, every AE version, each AE's folded seriousness, record statuses,
DLT records, cohort (3+3) state and flagged missed assessments."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Column, Index, Text
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
    car_t_infused_on: date | None = None
    weight_kg: str | None = Field(default=None, max_length=40)
    screening_history: list[dict[str, object]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    """The enrolment's exclusions by history as sent (code, answer, last_on): eligibility is judged at the dose."""
    eligibility_signalled: str | None = Field(default=None, max_length=2000)
    """The eligibility verdict last signalled (kind and detail): a deviation goes out only when it changes."""


class Dose(SQLModel, table=True):
    __tablename__ = "safety_doses"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    dose_id: str = Field(primary_key=True, max_length=200)
    number: int
    administered_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    administered_on: date | None = None
    """The calendar date at the site (the sender's UTC offset): the study calendar's anchor date if first."""
    cells_per_kg: str | None = Field(default=None, max_length=40)
    utc_offset_minutes: int | None = None
    """The sender's UTC offset: site days (DLT window end, visit windows) start and end at its midnight."""


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
    anticoagulated: bool | None = None
    term: str | None = Field(default=None, max_length=200)
    grade: int | None = None
    grade_floor: bool = False
    """The grade is the lowest the data allows (a limit missing, a censored value): "at least grade N"."""
    grade_reason: str = Field(default="", max_length=1000)


class LabTermState(SQLModel, table=True):
    """Per subject and CTCAE term: the baseline grade, the worst grade already signalled, and how many signals were
    raised (their numbers, `LabToxicityData.sequence`: notify tells a late signal from news by them)."""

    __tablename__ = "safety_lab_terms"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    term: str = Field(primary_key=True, max_length=200)
    baseline_grade: int | None = None
    baseline_collected_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    signalled_grade: int | None = None
    signals_raised: int = 0


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
    entered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    """When the site entered this version, if its envelope said (see `sae_retraction.site_entry_time`): a version
    the EDC delivered late is not taken for one sent after a retraction."""


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
    replaced_by: str | None = Field(default=None, max_length=200)
    """The id the site re-entered the record under, when it said (`RecordStatusData.replaced_by`)."""


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
    decided_criterion: str | None = Field(default=None, max_length=80)
    """The criterion the officer's decision judged: a rejection stands until the data show more than it did."""
    decided_relatedness: str | None = Field(default=None, max_length=20)
    """The AE's relatedness when the officer decided (dlt_decision_basis: a later rise is news to a rejection)."""
    decided_met: bool | None = None
    """Whether the AE met a DLT criterion when the officer decided; None: decided before this was kept."""
    divergence: str | None = Field(default=None, max_length=20)
    """How the AE's data now stand against the decision (dlt_decision_basis.Divergence); None: as it relied on.
    The officers were told when it last changed, so a later event of the subject tells them nothing again."""
    decided_state: str | None = Field(default=None, max_length=20)
    """The officer's decision on file ('confirmed', 'rejected'); the state may differ when the data reopened it."""
    decided_term: str | None = Field(default=None, max_length=500)
    """The AE's CTCAE term when the officer decided: the event the decision is about."""


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
    not_evaluable: int = 0
    replacements_needed: int = 0
    under_review: int = 0
    subjects_confirmed: int = 0
    subjects_suspected: int = 0
    events_confirmed: int = 0
    events_suspected: int = 0


class SubjectOutcomeRow(SQLModel, table=True):
    """Each subject's stored place in the 3+3 count, recomputed from the subject's own data on each of its
    events; the arms' tallies are summed from these rows, never from a rescan of the trial."""

    __tablename__ = "safety_subject_outcomes"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    arm: str | None = Field(default=None, max_length=40, index=True)
    outcome: str = Field(default="excluded", max_length=20)
    dlt_confirmed: int = 0
    dlt_suspected: int = 0
    infusions_given: int = 0
    infusions_planned: int = 0
    evaluable_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    changes_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True, index=True))
    """The next instant the outcome changes by time alone (the sweep reassesses the subject then)."""
    first_dlt_on: date | None = None
    """The earliest onset of the subject's open or confirmed DLTs (None: none, or unknown): enrolment checks
    judged as of an earlier date do not see them."""
    reason: str = Field(default="", max_length=2000)
    study_status: str = Field(default="on_study", max_length=20)
    study_status_on: date | None = None
    study_status_reason: str | None = Field(default=None, max_length=1000)
    study_status_event_id: str | None = Field(default=None, max_length=64)
    revision: int = 0
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class DoseRecommendationRow(SQLModel, table=True):
    """The trial's last signalled recommended dose, so a signal goes out only when it changes."""

    __tablename__ = "safety_dose_recommendations"

    trial_id: str = Field(primary_key=True, max_length=64)
    recommended_arm: str | None = Field(default=None, max_length=40)
    basis: str = Field(max_length=20)
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


class SusarCase(SQLModel, table=True):
    """One SAE's expedited-reporting file: the RSI's expectedness proposal, the officer's expectedness and
    the sponsor's causality (each with who, when and why), the SUSAR clock as last signalled, and the
    officer's edited narrative. Every change is also in the audit trail (entity `susar/<trial>/<subject>/<ae>`)."""

    __tablename__ = "safety_susar_cases"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    ae_id: str = Field(primary_key=True, max_length=200)
    term: str = Field(max_length=500)
    meddra_code: str | None = Field(default=None, max_length=8)
    site_relatedness: str | None = Field(default=None, max_length=20)
    site_relatedness_version: int = 0
    proposed_expectedness: str = Field(max_length=20)
    proposed_reason: str = Field(max_length=1000)
    rsi_version: str = Field(max_length=40)
    confirmed_expectedness: str | None = Field(default=None, max_length=20)
    expectedness_by: str | None = Field(default=None, max_length=200)
    expectedness_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    expectedness_reason: str | None = Field(default=None, max_length=2000)
    sponsor_causality: str | None = Field(default=None, max_length=20)
    causality_by: str | None = Field(default=None, max_length=200)
    causality_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    causality_reason: str | None = Field(default=None, max_length=2000)
    susar: bool = False
    clock_start: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    clock_basis: str | None = Field(default=None, max_length=200)
    fatal_or_life_threatening: bool = False
    upgraded_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    signalled_version: int = 0
    assessments: list[dict[str, object]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    """The sponsor's assessments in the order made (kind, value, at, basis), a superseded confirmation as an
    expectedness of None: the SUSAR clock replays them with the AE versions. None: a case from before the log
    (its current assessments stand in for it)."""
    narrative: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    narrative_by: str | None = Field(default=None, max_length=200)
    narrative_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    revision: int = 0
    """Counts decisions: part of the ids of signals that an officer's decision (not an event) caused."""
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class TransfusionRecord(SQLModel, table=True):
    """A blood-product transfusion as the site recorded it (haematological response needs days without one)."""

    __tablename__ = "safety_transfusions"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    transfusion_id: str = Field(primary_key=True, max_length=200)
    product: str = Field(max_length=20)
    administered_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    units: str | None = Field(default=None, max_length=40)
    volume_ml: str | None = Field(default=None, max_length=40)


class SampleRecord(SQLModel, table=True):
    """A protocol sample collected (immunology...): the sweep flags sample visits with none."""

    __tablename__ = "safety_samples"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    sample_id: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=80)
    collected_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    visit: str | None = Field(default=None, max_length=80)


class ResponseStateRow(SQLModel, table=True):
    """A subject's haematological response: `point` "current" (recomputed on every datum, written when it changes,
    so a loss is signalled once; `as_of` is when it last changed) or a protocol timepoint ("week 4"), as of the
    end of that study day."""

    __tablename__ = "safety_responses"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    point: str = Field(primary_key=True, max_length=80)
    level: str = Field(max_length=20)
    since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    confirmed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    as_of: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    duration_days: str | None = Field(default=None, max_length=20)
    awaiting: str = Field(default="none", max_length=20)
    reason: str = Field(default="", max_length=2000)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    lost_signalled_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    """On "current": the start of the last response whose loss was signalled (each loss is signalled once)."""


# The audit chain is shared code, but safety writes it in its own transactions, so it creates it too.
class VitalSigns(SQLModel, table=True):
    """One set of vital signs (infusion-day monitoring): exact decimal text, canonical units (C, mm Hg, /min, %)."""

    __tablename__ = "safety_vital_signs"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    vitals_id: str = Field(primary_key=True, max_length=200)
    measured_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    temperature_c: str | None = Field(default=None, max_length=20)
    systolic_bp: str | None = Field(default=None, max_length=20)
    diastolic_bp: str | None = Field(default=None, max_length=20)
    heart_rate: str | None = Field(default=None, max_length=20)
    respiratory_rate: str | None = Field(default=None, max_length=20)
    spo2: str | None = Field(default=None, max_length=20)
    dose_id: str | None = Field(default=None, max_length=200)
    event_id: str = Field(max_length=64)
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class AeReview(SQLModel, table=True):
    """The site's AE assessment at a visit ("AE review done", new AEs or none): completes a visit's `ae` part."""

    __tablename__ = "safety_ae_reviews"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    review_id: str = Field(primary_key=True, max_length=200)
    assessed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    visit: str | None = Field(default=None, max_length=80)
    new_aes: bool = False
    event_id: str = Field(max_length=64)
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class AcuteReactionRow(SQLModel, table=True):
    """An AE signalled as an acute reaction (onset within the window after an infusion), at its worst grade so
    far: the key makes each worsening a one-off signal; the subject API lists them."""

    __tablename__ = "safety_acute_reactions"

    trial_id: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(primary_key=True, max_length=200)
    ae_id: str = Field(primary_key=True, max_length=200)
    ae_version: int
    term: str = Field(max_length=500)
    grade: int
    dose_id: str = Field(max_length=200)
    dose_number: int
    infusion_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    onset: str | None = Field(default=None, max_length=10)
    onset_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    onset_precision: str = Field(max_length=10)
    hours_after_infusion: str | None = Field(default=None, max_length=20)
    dlt_grade: bool = False
    reason: str = Field(max_length=1000)
    signalled_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


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
    SubjectOutcomeRow,
    DoseRecommendationRow,
    MissedAssessment,
    SusarCase,
    TransfusionRecord,
    SampleRecord,
    ResponseStateRow,
    AuditEntry,
    VitalSigns,
    AeReview,
    AcuteReactionRow,
]
