"""The trial protocol as data: everything trial-specific lives in a YAML file validated at start.

Sections: arms (in escalation order, with their infusion schedules), the DLT window and criteria, the
cohort (3+3) rules, the assessment schedule, SAE and lab alert rules, contacts and the escalation policy
that notify follows; the reference safety information (RSI) and the expedited (SUSAR) reporting recipients;
eligibility at enrolment, dosing conformance and product release.
`sentinel protocol check FILE` explains every error with its path.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PROTOCOL = "nct07212335.yaml"
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]


class ProtocolModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(ProtocolModel):
    id: Annotated[str, Field(min_length=1, max_length=40)]
    label: str
    infusions: int = Field(ge=1, le=52)
    interval_days: int | None = Field(default=None, ge=1)
    cells_per_kg: Decimal = Field(gt=0)
    evaluable_requires_assessments: list[str] | None = Field(
        default=None,
        description="This arm's required visits for DLT-evaluability, instead of the cohort's (an arm whose DLT "
        "period ends later needs the visit at its end); null: the cohort's list",
    )

    @model_validator(mode="after")
    def _interval_for_repeats(self) -> Arm:
        if self.infusions > 1 and self.interval_days is None:
            raise ValueError("an arm with more than one infusion needs interval_days")
        return self


class SaeRules(ProtocolModel):
    """`reentry_lookback_hours`: a serious AE reported within this many hours (either side) of the site taking back a
    serious AE of the same subject and term is taken as its re-entry under a new AE id, so its reporting clock
    starts when the first record's did (ICH E2D 5.2: day 0 is the sponsor's first receipt of the case). A link the
    site sends itself (`replaced_by` on the retraction) needs no window. 0 turns the same-term link off."""

    report_within_hours: int = Field(default=24, ge=1, le=24 * 30)
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)
    reentry_lookback_hours: int = Field(default=168, ge=0, le=24 * 90)


class LabAlerts(ProtocolModel):
    """When a graded lab result pages someone: at or above the threshold and worse than the subject's baseline.

    A floor grade ("at least grade 3": a limit missing, a censored value) counts as its floor. Each such
    alert opens a review obligation due `review_hours` after Sentinel received the result, and pages up
    the escalation steps until acknowledged; `review_hours: null` notifies once with no clock.
    """

    min_grade: int = Field(default=3, ge=1, le=4)
    term_min_grade: dict[str, Annotated[int, Field(ge=1, le=4)]] = Field(
        default_factory=dict, description="Per CTCAE term overrides of min_grade"
    )
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)
    review_hours: int | None = Field(
        default=24,
        ge=1,
        le=24 * 30,
        description="A lab toxicity must be reviewed by then (reminders, overdue pages); null: notify once",
    )

    def threshold(self, term: str) -> int:
        return self.term_min_grade.get(term, self.min_grade)


class DataQualityAlerts(ProtocolModel):
    """Who hears of data-quality findings (an AE term that maps to no CTCAE term, an implausible lab value, a
    unit nobody knows, contradictory seriousness): informational alerts, sent once, never a clock.

    `notify_roles` (default: the lab alert roles) gets every finding; contacts with `sites` only those from
    their sites. `code_roles` adds roles for one code (an implausible value can hide a grade 4).
    `population_max`: per CTCAE term, the largest value (in the term's SI unit: 10^9/L, g/L, umol/L, mmol/L)
    this trial's population can show; a larger one is not graded but flagged `implausible_value`, naming the
    unit likely meant (an ANC of 250 "10^9/L" is possible in leukaemia, and is 250/uL in a cytopenic subject).
    """

    notify_roles: list[str] | None = Field(default=None, min_length=1)
    code_roles: dict[str, list[str]] = Field(default_factory=dict)
    population_max: dict[str, Annotated[Decimal, Field(gt=0)]] = Field(default_factory=dict)


Relatedness = Literal["not_related", "unlikely", "possible", "probable", "definite"]
RELATEDNESS_ORDER: tuple[Relatedness, ...] = ("not_related", "unlikely", "possible", "probable", "definite")


class DltCriterion(ProtocolModel):
    """One way an AE inside the window counts as a DLT; an AE matching any criterion is a suspected DLT.

    `terms` limits the criterion to those CTCAE terms; `exclude_haematological` leaves out the protocol's
    haematological terms (they have their own rules); `min_relatedness` is the least causality that counts
    (None: any causality). Relatedness not yet assessed counts as related under every criterion.
    """

    name: Annotated[str, Field(min_length=1, max_length=80)]
    description: str
    min_grade: int = Field(ge=1, le=5)
    terms: list[str] = Field(default_factory=list)
    exclude_haematological: bool = False
    min_relatedness: Relatedness | None = None


class FebrileNeutropenia(ProtocolModel):
    """Febrile neutropenia is a criterion of its own: it is not a cytopenia 'worse than baseline'."""

    min_grade: int = Field(default=3, ge=1, le=5)
    min_relatedness: Relatedness | None = None
    terms: list[str] = Field(default_factory=lambda: ["Febrile neutropenia"], min_length=1)


class HaematologicalDlt(ProtocolModel):
    """Cytopenias, for populations that may enter the trial with them (grade 3-4 at baseline).

    Each rule is an option (None turns it off); an AE or a lab result of one of `terms` is a suspected DLT when
    - `min_worsening_grades`: its grade is >= min_grade and at least this many grades worse than baseline;
    - `recover_by_day`: it worsened from baseline inside the window and no result on or after that study day
      is back at the baseline grade or better (failure to recover);
    - `grade4_max_days`: grade 4 lasted more than this many days (consecutive grade-4 results inside the
      window; a grade 4 present at baseline counts only with `grade4_from_baseline_counts`);
    - `febrile_neutropenia`: its own grade and relatedness rule.
    `min_relatedness` applies to the AE-based cytopenia rules (labs carry no causality: lab-based suspicions
    say so and the officer decides).
    """

    terms: list[str] = Field(min_length=1)
    min_grade: int = Field(default=3, ge=1, le=5)
    only_if_worse_than_baseline: bool = True
    """False: any grade >= min_grade counts whatever the baseline (populations entering with normal counts)."""
    min_worsening_grades: int | None = Field(default=1, ge=1, le=4)
    recover_by_day: int | None = Field(default=None, ge=1, le=365)
    grade4_max_days: int | None = Field(default=None, ge=1, le=365)
    grade4_from_baseline_counts: bool = False
    min_relatedness: Relatedness | None = None
    febrile_neutropenia: FebrileNeutropenia | None = None
    labs_count: bool = True
    """A lab-only worsening that meets a rule creates a suspected DLT (not only a lab alert)."""


DltAnchor = Literal["first_infusion", "last_planned_infusion", "per_infusion", "enrolment"]


class DltRules(ProtocolModel):
    """The DLT observation window and the criteria.

    `anchor`: `first_infusion` (window_days from the first infusion), `last_planned_infusion` (from the first
    infusion until window_days after the last infusion the arm plans, at its planned day or later if it was
    given later), `per_infusion` (window_days after each infusion given: their union), `enrolment`.
    """

    window_days: int = Field(default=28, ge=1, le=365)
    anchor: DltAnchor = "first_infusion"
    criteria: list[DltCriterion] = Field(min_length=1)
    haematological: HaematologicalDlt | None = None
    review_hours: int = Field(default=72, ge=1, description="A suspected DLT must be confirmed or rejected by then")
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)
    synonyms: dict[str, str] = Field(
        default_factory=dict, description="Extra verbatim term -> CTCAE term mappings, on top of the built-in table"
    )


class CohortRules(ProtocolModel):
    """3+3 by default: 0/3 escalate, 1/3 expand to 6, 1/6 escalate, >= stop_at_dlts stop escalation.

    `count`: `subjects` counts subjects with >= 1 DLT (the usual 3+3 reading), `events` counts DLTs.
    `confirm_recommended_dose`: the arm to be recommended (the highest cleared, or the one below a stopped
    arm) must have `expanded_size` evaluable subjects before the recommendation is declared.
    `evaluable_requires_all_infusions` / `evaluable_requires_assessments`: a subject without a DLT is
    evaluable only after every infusion their arm plans, the end of the DLT window, and data for each named
    assessment of the schedule.
    """

    initial_size: int = Field(default=3, ge=1)
    expanded_size: int = Field(default=6, ge=1)
    max_dlts_to_escalate: int = Field(default=0, ge=0, description="DLTs in the initial cohort that still escalate")
    max_dlts_to_escalate_expanded: int = Field(default=1, ge=0, description="DLTs among the expanded cohort")
    stop_at_dlts: int = Field(default=2, ge=1, description="This many DLTs in an arm stop escalation at once")
    count: Literal["subjects", "events"] = "subjects"
    confirm_recommended_dose: bool = True
    evaluable_requires_all_infusions: bool = True
    evaluable_requires_assessments: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sizes(self) -> CohortRules:
        if self.expanded_size < self.initial_size:
            raise ValueError("expanded_size must be at least initial_size")
        return self


StudyDayCount = Literal["anchor_is_day_0", "anchor_is_day_1"]


AssessmentKind = Literal["lab", "ae"]


class Assessment(ProtocolModel):
    """A scheduled visit on study `day` (counted as `study_days` says), expected within +/- `window_days`."""

    name: Annotated[str, Field(min_length=1, max_length=80)]
    day: int = Field(ge=0)
    window_days: int = Field(default=2, ge=0)
    kinds: list[AssessmentKind] = Field(default_factory=lambda: list[AssessmentKind](["lab"]), min_length=1)


VitalSign = Literal["temperature_c", "systolic_bp", "diastolic_bp", "heart_rate", "respiratory_rate", "spo2"]
VitalsTerm = Literal["Fever", "Hypertension", "Hypotension"]


class InfusionVitals(ProtocolModel):
    """Infusion-day monitoring: vital signs every `interval_minutes` from the start of each infusion until
    `observe_after_minutes` after its end, and the CTCAE findings graded from them.

    The contract records an infusion's start only, so its end is start + `infusion_minutes`. Once the
    observation period is over, each slot (start, start + interval, ...) needs a reading of every `required`
    sign within +/- `tolerance_minutes`; more than `allowed_missing_slots` incomplete slots is flagged once,
    `entry_grace_hours` after the observation ended (vitals transcribed from paper arrive late).
    Findings (CTCAE v5.0 adult criteria: Fever by temperature; Hypertension by pressure, always "at least",
    its clinical half to be graded by the investigator) are signalled as lab toxicities at `min_grade` per term
    and again only when worse than the same term in the preceding `repeat_after_hours`.
    CTCAE grades Hypotension by intervention only: `hypotension_systolic_below` is the protocol's own screen
    (not a CTCAE cut-off) that reports a low systolic pressure as "at least grade 1, grade it clinically";
    null turns it off.
    """

    interval_minutes: int = Field(default=15, ge=1, le=240)
    infusion_minutes: int = Field(default=60, ge=1, le=24 * 60)
    observe_after_minutes: int = Field(default=120, ge=0, le=7 * 24 * 60)
    tolerance_minutes: int = Field(default=5, ge=0, le=120)
    allowed_missing_slots: int = Field(default=0, ge=0)
    entry_grace_hours: int = Field(
        default=0, ge=0, le=24 * 14, description="Wait this long after the observation for data entry, then check"
    )
    required: list[VitalSign] = Field(
        default_factory=lambda: list[VitalSign](["temperature_c", "systolic_bp", "diastolic_bp", "heart_rate"]),
        min_length=1,
    )
    min_grade: dict[VitalsTerm, Annotated[int, Field(ge=1, le=5)]] = Field(
        default_factory=lambda: dict[VitalsTerm, int]({"Fever": 1, "Hypertension": 3, "Hypotension": 1})
    )
    hypotension_systolic_below: Decimal | None = Field(default=None, gt=0, le=200)
    repeat_after_hours: int = Field(default=24, ge=1, le=24 * 30)

    @model_validator(mode="after")
    def _tolerance_inside_interval(self) -> InfusionVitals:
        if 2 * self.tolerance_minutes >= self.interval_minutes:
            raise ValueError("tolerance_minutes must be less than half of interval_minutes (one reading, one slot)")
        return self


class AcuteReactions(ProtocolModel):
    """The acute-reaction window: an AE with onset within `window_hours` after the start of an infusion
    (inclusive: exactly 24 h counts) at grade >= `min_grade` is an acute reaction, alerted to `notify_roles`
    and reviewed within `review_hours` (null: notify once, no clock). `dlt_grade` marks the reactions that
    the DLT criteria also judge. `date_only_onset`: an AE whose onset has a day but no time, on the infusion's
    day or the next, `counts` (the cautious reading) or is `ignored`.
    """

    window_hours: int = Field(default=24, ge=1, le=24 * 14)
    min_grade: int = Field(default=2, ge=1, le=5)
    dlt_grade: int = Field(default=3, ge=1, le=5)
    date_only_onset: Literal["counts", "ignored"] = "counts"
    review_hours: int | None = Field(default=24, ge=1, le=24 * 30)
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)


AeEvidence = Literal["ae_review", "ae_report", "lab"]


class AeAssessment(ProtocolModel):
    """What completes the `ae` part of a visit (the delayed-reaction checks at weeks 4, 8, 12, 24).

    `ae_review`: an AE review record ("AE review done", new AEs or none) for the visit (named, or assessed
    inside its window); `ae_report`: an AE report received inside the window; `lab`: a lab drawn inside it
    (the old reading, where a subject seen for labs counts as asked about AEs). The default keeps all three,
    for protocols written before the review record existed.
    """

    evidence: list[AeEvidence] = Field(
        default_factory=lambda: list[AeEvidence](["ae_review", "ae_report", "lab"]), min_length=1
    )


# --- haematological response and protocol samples ------------------------------------------------------

TransfusionProduct = Literal["red_cells", "platelets", "other"]


class LineageResponse(ProtocolModel):
    """One lineage's response levels, in the SI unit of its CTCAE term (10^9/L for counts, g/L for Hb).

    `complete_min`: a count at or above it is complete-response level; `partial_above`: a count strictly
    above it is partial-response level (above the trial's definition of severe cytopenia).
    """

    term: Literal[
        "Neutrophil count decreased",
        "Platelet count decreased",
        "Anemia",
        "White blood cell decreased",
        "Lymphocyte count decreased",
    ]
    complete_min: Decimal = Field(gt=0)
    partial_above: Decimal = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LineageResponse:
        if self.complete_min <= self.partial_above:
            raise ValueError("complete_min must be above partial_above (a complete response is also partial)")
        return self


class ResponseTimepoint(ProtocolModel):
    """A protocol time at which the response and its duration are recorded (end of study `day`, site time)."""

    name: Annotated[str, Field(min_length=1, max_length=80)]
    day: int = Field(ge=0, le=3650)


class ResponseRules(ProtocolModel):
    """Haematological response: CR when every lineage is at complete level, PR when every lineage is at least
    at partial level, each confirmed by two blood counts at least `confirm_min_hours` apart ("dual-test
    compliance") with no transfusion of `transfusion_products` for `transfusion_free_days` before the first
    of them and none since. A confirmed response is lost at a count below its level or a transfusion; a lost
    response (or a CR fallen to PR) is an alert to `notify_roles`.
    """

    lineages: dict[Annotated[str, Field(min_length=1, max_length=40)], LineageResponse] = Field(min_length=1)
    confirm_min_hours: int = Field(default=48, ge=1, le=24 * 90)
    count_within_minutes: int = Field(
        default=60, ge=0, le=24 * 60, description="Results this close to a count's first result belong to that count"
    )
    transfusion_free_days: int = Field(default=7, ge=0, le=365)
    transfusion_products: list[TransfusionProduct] = Field(
        default_factory=lambda: list[TransfusionProduct](["red_cells", "platelets", "other"]), min_length=1
    )
    timepoints: list[ResponseTimepoint] = Field(default_factory=list)
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ResponseRules:
        terms = [lineage.term for lineage in self.lineages.values()]
        if len(set(terms)) != len(terms):
            raise ValueError(f"each lineage needs its own CTCAE term, got {terms}")
        names = [t.name for t in self.timepoints]
        if len(set(names)) != len(names):
            raise ValueError(f"timepoint names must be unique, got {names}")
        return self


class SampleVisit(ProtocolModel):
    """A sample due on study `day` +/- `window_days` (whole site days, as visits); `before_first_infusion`: due
    from `window_days` before day `day` until the first infusion (a baseline sample must precede it)."""

    name: Annotated[str, Field(min_length=1, max_length=60)]
    day: int = Field(ge=0, le=3650)
    window_days: int = Field(default=2, ge=0, le=365)
    before_first_infusion: bool = False


class SampleSchedule(ProtocolModel):
    """Protocol samples of one `kind` (as `sample` events carry it); a sample missed in its window is flagged
    to `notify_roles` (contacts with `sites`: only their sites')."""

    kind: Annotated[str, Field(min_length=1, max_length=80)]
    visits: list[SampleVisit] = Field(min_length=1)
    notify_roles: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SampleSchedule:
        names = [v.name for v in self.visits]
        if len(set(names)) != len(names):
            raise ValueError(f"sample visit names must be unique, got {names}")
        return self


class EscalationStep(ProtocolModel):
    """Who is paged at this step (contact roles or e-mail addresses), and how long to wait for an ack."""

    targets: list[str] = Field(min_length=1)
    wait_minutes: int = Field(default=30, ge=1)


class EscalationPolicy(ProtocolModel):
    steps: list[EscalationStep] = Field(min_length=1)
    reminders_before_deadline_hours: list[Annotated[Decimal, Field(gt=0)]] = Field(
        default_factory=lambda: [Decimal(12), Decimal(4), Decimal(1)],
        description="Hours before each obligation's deadline; each must be positive",
    )
    overdue_repeat_minutes: int = Field(default=60, ge=1)


class Contact(ProtocolModel):
    name: str
    email: Email
    role: Annotated[str, Field(min_length=1)]
    sites: list[str] = Field(
        default_factory=list, description="Site ids this contact answers for (data-quality findings); empty: all"
    )


# --- reference safety information and expedited reporting ---------------------------------------------


class ExpectedReaction(ProtocolModel):
    """A reaction the RSI lists as expected: by CTCAE term (and MedDRA code where known).

    `max_grade` is the highest grade the RSI expects: a worse one is unexpected (ICH E2A II.A.3: greater
    severity than described is unexpected). Without it, any grade short of death is expected; a fatal
    outcome is expected only when `max_grade` is 5 (EU CT-3 7.2.3.2: a fatal outcome of an expected reaction
    is unexpected unless the RSI says it can be fatal).
    """

    term: Annotated[str, Field(min_length=1, max_length=200)]
    meddra_code: Annotated[str, Field(pattern=r"^\d{8}$")] | None = None
    max_grade: int | None = Field(default=None, ge=1, le=5)


class ReferenceSafetyInformation(ProtocolModel):
    """The RSI against which the sponsor judges expectedness (EU CTR Annex III 2.3; ICH E2A II.A.3)."""

    product: Annotated[str, Field(min_length=1, max_length=200)]
    document: Annotated[str, Field(min_length=1, max_length=200)] = "Investigator's Brochure"
    version: Annotated[str, Field(min_length=1, max_length=40)]
    date: datetime.date
    route: Annotated[str, Field(max_length=60)] | None = "intravenous"
    indication: Annotated[str, Field(max_length=200)] | None = None
    expected_reactions: list[ExpectedReaction] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_terms(self) -> ReferenceSafetyInformation:
        terms = [r.term.casefold() for r in self.expected_reactions]
        duplicates = sorted({t for t in terms if terms.count(t) > 1})
        if duplicates:
            raise ValueError(f"expected reactions listed twice: {duplicates}")
        return self


RecipientKind = Literal["regulator", "ethics_committee", "investigators"]


class ReportRecipient(ProtocolModel):
    """Who receives expedited reports: each recipient is its own obligation, closed by its own reference."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
    kind: RecipientKind
    name: Annotated[str, Field(min_length=1, max_length=200)]
    route: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="How it is submitted (EudraVigilance, CTIS, e-mail...), shown on the obligation"
    )
    e2b_receiver: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="The receiver identifier in E2B messages (N.1.4, N.2.r.3), e.g. EVCTMPROD"
    )


class ExpeditedReporting(ProtocolModel):
    """SUSAR clocks (ICH E2A III.A.2; EU CTR Art. 42; 21 CFR 312.32(c)); the defaults are the regulatory maxima.

    Day 0 is the sponsor's first awareness of a case meeting the criteria. Fatal or life-threatening: report
    by day `fatal_days`, complete by day `completion_days`; otherwise by day `other_days`. New information
    on a reported case opens a follow-up report due `follow_up_days` after it arrived, if `follow_up_reports`.
    """

    fatal_days: int = Field(default=7, ge=1, le=7)
    completion_days: int = Field(default=15, ge=1, le=15)
    other_days: int = Field(default=15, ge=1, le=15)
    follow_up_reports: bool = True
    follow_up_days: int = Field(default=15, ge=1, le=15)
    recipients: list[ReportRecipient] = Field(min_length=1)
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)
    sender_organisation: Annotated[str, Field(min_length=1, max_length=200)] = "Sponsor"
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    time_zone: str | None = None
    """The sponsor's IANA time zone (Europe/Paris), where calendar days are counted: a day-7 deadline keeps its
    wall-clock time across a clock change. Unset: days of 24 h from day 0."""

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExpeditedReporting:
        ids = [r.id for r in self.recipients]
        if len(set(ids)) != len(ids):
            raise ValueError(f"recipient ids must be unique, got {ids}")
        if self.completion_days < self.fatal_days:
            raise ValueError("completion_days cannot be before fatal_days")
        return self


# --- eligibility, dosing conformance, product release (issue 13) ----------------------------------------

LabOperator = Literal["<", "<=", ">", ">="]


class ScreeningLab(ProtocolModel):
    """One screening lab criterion: a result of one of `tests` (CDISC LBTESTCD or LOINC, as the labs carry
    them) compared with `limit` in `unit`, or with `limit` x the result's own ULN when `of_uln`.

    A result in another unit of the same kind is converted (g/dL -> g/L, cells/uL -> 10^9/L); one whose unit
    is missing or unknown, or an x ULN criterion without a ULN, cannot be judged and counts as missing.
    `required: false` lets a criterion be judged only when the result was sent (its absence is not a gap).
    """

    name: Annotated[str, Field(min_length=1, max_length=80)]
    tests: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(min_length=1)
    operator: LabOperator
    limit: Decimal = Field(gt=0)
    unit: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    of_uln: bool = False
    required: bool = True

    @model_validator(mode="after")
    def _unit_or_uln(self) -> ScreeningLab:
        if self.of_uln == (self.unit is not None):
            raise ValueError("give either a unit (an absolute limit) or of_uln: true (a multiple of the ULN)")
        return self


class HistoryExclusion(ProtocolModel):
    """An exclusion by history before the first dose: a coded answer on the enrolment ("within the window?")
    or the date of the last such event, which excludes when it is at most `within_days` before the first dose."""

    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    label: Annotated[str, Field(min_length=1, max_length=120)]
    within_days: int = Field(ge=0, le=3650)
    required: bool = True


class EligibilityRules(ProtocolModel):
    """Eligibility at enrolment, checked when the subject is dosed (a subject never dosed is never at risk).

    Screening labs: for each criterion, the latest active result collected within `screening_window_days`
    before the first infusion (and not after it). `cytopenia_any`: the inclusion holds when any of them is met
    on a result collected at least `car_t_min_days` after the CAR-T infusion (`car_t_infused_on`). `exclude_labs`
    and `history`: any one met excludes. Dosed while not eligible, or with screening data missing, is a protocol
    deviation paged to `notify_roles` (besides the DLT roles) until acknowledged.
    """

    screening_window_days: int = Field(default=14, ge=1, le=365)
    car_t_min_days: int | None = Field(default=21, ge=0, le=3650)
    cytopenia_any: list[ScreeningLab] = Field(default_factory=list)
    exclude_labs: list[ScreeningLab] = Field(default_factory=list)
    history: list[HistoryExclusion] = Field(default_factory=list)
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> EligibilityRules:
        names = [c.name for c in (*self.cytopenia_any, *self.exclude_labs)]
        codes = [h.code for h in self.history]
        if len(set(names)) != len(names) or len(set(codes)) != len(codes):
            raise ValueError("criterion names and history codes must be unique")
        return self


class Premedication(ProtocolModel):
    """The premedication each infusion needs: `drug` at `dose_mg`, `minutes_before` the infusion +/- window."""

    drug: Annotated[str, Field(min_length=1, max_length=80)]
    dose_mg: Decimal = Field(gt=0)
    minutes_before: int = Field(ge=0, le=24 * 60)
    window_minutes: int = Field(default=15, ge=0, le=24 * 60)


class DosingRules(ProtocolModel):
    """Each infusion against its arm: cells/kg within `cells_per_kg_tolerance_percent` of the arm's dose (as
    sent, and as total cells / weight where those are given), no more infusions than the arm plans, each
    repeat `interval_days` after the one before +/- `interval_window_days`, and the premedication where recorded.
    An overdose or an extra infusion pages `notify_roles`; an under-dose, a late or early repeat or a
    premedication not as planned is mailed to them (the infusion is given; the officer reviews it)."""

    cells_per_kg_tolerance_percent: Decimal = Field(default=Decimal(10), ge=0, le=100)
    interval_window_days: int = Field(default=2, ge=0, le=60)
    premedication: Premedication | None = None
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)


ReleaseTest = Literal["sterility", "pathogens", "mycoplasma", "endotoxin", "purity", "tumorigenicity", "identity"]


class ProductReleaseRules(ProtocolModel):
    """Lot release before infusion: viability at or above `min_viability_percent` and every test of
    `required_tests` passed. A dose from a lot that failed or has no release on record pages `notify_roles`.
    `release_required_on_every_dose: false` judges only doses that name a lot or carry release results (an
    EDC that records neither cannot show release; true: such a dose pages as not released)."""

    min_viability_percent: Decimal = Field(default=Decimal(85), gt=0, le=100)
    required_tests: list[ReleaseTest] = Field(
        default_factory=lambda: list[ReleaseTest](["sterility", "pathogens", "purity", "tumorigenicity"])
    )
    release_required_on_every_dose: bool = False
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)


class Protocol(ProtocolModel):
    trial_id: Annotated[str, Field(min_length=1, max_length=64)]
    title: str
    arms: list[Arm] = Field(min_length=1, description="In escalation order")
    study_days: StudyDayCount = Field(
        default="anchor_is_day_1",
        description="How the DLT window and the visit schedule number days: the anchor's date is day 0 or day 1",
    )
    dlt: DltRules
    cohort: CohortRules = CohortRules()
    assessments: list[Assessment] = Field(default_factory=list)
    sae: SaeRules = SaeRules()
    lab_alerts: LabAlerts = LabAlerts()
    data_quality: DataQualityAlerts = DataQualityAlerts()
    contacts: list[Contact] = Field(min_length=1)
    escalation: EscalationPolicy
    reference_safety_information: ReferenceSafetyInformation | None = None
    expedited_reporting: ExpeditedReporting | None = None
    infusion_vitals: InfusionVitals | None = None
    acute_reactions: AcuteReactions | None = None
    ae_assessment: AeAssessment = AeAssessment()
    eligibility: EligibilityRules | None = None
    dosing: DosingRules | None = None
    product_release: ProductReleaseRules | None = None
    response: ResponseRules | None = None
    samples: list[SampleSchedule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        ids = [arm.id for arm in self.arms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"arm ids must be unique, got {ids}")
        roles = {c.role for c in self.contacts}
        emails = {c.email for c in self.contacts}
        sections = {
            "sae.notify_roles": self.sae.notify_roles,
            "lab_alerts.notify_roles": self.lab_alerts.notify_roles,
            "dlt.notify_roles": self.dlt.notify_roles,
            "data_quality.notify_roles": self.data_quality.notify_roles or [],
            **{f"data_quality.code_roles.{code}": r for code, r in self.data_quality.code_roles.items()},
        }
        if self.acute_reactions is not None:
            sections["acute_reactions.notify_roles"] = self.acute_reactions.notify_roles
        if self.expedited_reporting is not None:
            if self.reference_safety_information is None:
                raise ValueError("expedited_reporting needs reference_safety_information to judge expectedness")
            sections["expedited_reporting.notify_roles"] = self.expedited_reporting.notify_roles
        for name in ("eligibility", "dosing", "product_release"):
            section = getattr(self, name)
            if section is not None:
                sections[f"{name}.notify_roles"] = section.notify_roles
        if self.response is not None:
            sections["response.notify_roles"] = self.response.notify_roles
        for i, schedule in enumerate(self.samples):
            sections[f"samples.{i}.notify_roles"] = schedule.notify_roles
        kinds = [schedule.kind for schedule in self.samples]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"samples: each kind once, got {kinds}")
        for i, step in enumerate(self.escalation.steps):
            # Besides roles: e-mail addresses (checked below) and chat webhooks "webhook:<name>" (named in
            # the notify service's settings, which refuse to start when one is missing).
            sections[f"escalation.steps.{i}.targets"] = [
                t for t in step.targets if "@" not in t and not t.startswith("webhook:")
            ]
            if "webhook:" in step.targets:
                raise ValueError(f"escalation.steps.{i}.targets: 'webhook:' needs a name, e.g. 'webhook:safety-chat'")
        for section, wanted in sections.items():
            missing = [role for role in wanted if role not in roles]
            if missing:
                raise ValueError(f"{section} names roles no contact has: {missing}")
        unknown = [t for step in self.escalation.steps for t in step.targets if "@" in t and t not in emails]
        if unknown:
            raise ValueError(f"escalation targets name addresses that are not contacts: {unknown}")
        names = [a.name for a in self.assessments]
        if len(set(names)) != len(names):
            raise ValueError("assessment names must be unique")
        unknown_visits = [n for n in self.cohort.evaluable_requires_assessments if n not in names]
        if unknown_visits:
            raise ValueError(
                f"cohort.evaluable_requires_assessments names no assessment of the schedule: {unknown_visits}"
            )
        for arm in self.arms:
            unknown = [n for n in arm.evaluable_requires_assessments or [] if n not in names]
            if unknown:
                raise ValueError(
                    f"arms[{arm.id}].evaluable_requires_assessments names no assessment of the schedule: {unknown}"
                )
        late = [
            a.id for a in self.arms if a.interval_days and (a.infusions - 1) * a.interval_days >= self.dlt.window_days
        ]
        if self.dlt.anchor == "first_infusion" and late:
            raise ValueError(
                f"dlt.anchor: first_infusion leaves the last infusion of arms {late} outside the DLT window; "
                "use last_planned_infusion or per_infusion"
            )
        return self

    def arm(self, arm_id: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.id == arm_id), None)

    def contacts_with_role(self, role: str) -> list[Contact]:
        return [c for c in self.contacts if c.role == role]


class ProtocolError(ValueError):
    """A protocol file that cannot be used; `problems` lists each error with its path in the file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def parse_protocol(text: str, source: str = "<protocol>") -> Protocol:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ProtocolError(source, ["the file must be a YAML mapping"])
    try:
        return Protocol.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()]
        raise ProtocolError(source, problems) from exc


def load_protocol(path: Path | None) -> Protocol:
    """Load the protocol at `path`, or the shipped NCT07212335 example when no path is configured."""
    if path is None:
        text = resources.files("shared.protocols").joinpath(DEFAULT_PROTOCOL).read_text(encoding="utf-8")
        return parse_protocol(text, f"(shipped) {DEFAULT_PROTOCOL}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    return parse_protocol(text, str(path))
