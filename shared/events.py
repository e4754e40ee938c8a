"""Every message Sentinel exchanges, defined once for both sides of each topic.

Two layers:
- the *canonical inbound event* an EDC (or a connector) posts to ingest (DESIGN.md, Contracts);
- the *envelopes* on Kafka: CloudEvents 1.0 attributes plus `trialid`/`siteid`/`receivedat`, with a typed
  `data` payload, for `sentinel.clinical.v1` and `sentinel.signals.v1`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    field_validator,
    model_serializer,
    model_validator,
)

ID_NAMESPACE = uuid.UUID("6f1d3c52-7a38-4e0b-9d55-0c2b8f0a4e11")
"""Namespace for deterministic ids: the same input always yields the same id, so replays dedupe."""

PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
Text = Annotated[str, Field(min_length=1, max_length=200)]


def deterministic_id(*parts: str) -> str:
    """`str(uuid.uuid5(ID_NAMESPACE, "\\x1f".join(parts)))`, computed without building a UUID object (a third of the
    cost; ingest makes one per event)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_NAMESPACE_BYTES = ID_NAMESPACE.bytes


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _without_unset_link(handler: SerializerFunctionWrapHandler, model: BaseModel, field: str) -> dict[str, Any]:
    """Serialise `model` leaving out `field` while it is None: a field added to a message is then only on the wire
    when it says something, so a consumer deployed before it (extra="forbid") still reads every other message."""
    out: dict[str, Any] = handler(model)
    if out.get(field, 0) is None:
        del out[field]
    return out


# --- canonical inbound payloads -------------------------------------------------------------------


class Relatedness(StrEnum):
    NOT_RELATED = "not_related"
    UNLIKELY = "unlikely"
    POSSIBLE = "possible"
    PROBABLE = "probable"
    DEFINITE = "definite"


class SeriousnessCriteria(Model):
    """ICH E2A seriousness criteria, each a yes/no as ticked on the CRF."""

    death: bool = False
    life_threatening: bool = False
    hospitalization: bool = False
    disability: bool = False
    congenital_anomaly: bool = False
    medically_important: bool = False

    def ticked(self) -> list[str]:
        return [name for name, value in self.model_dump().items() if value]


def check_partial_date(value: str | None) -> str | None:
    """EDCs record onset as YYYY, YYYY-MM or YYYY-MM-DD; keep the precision, refuse impossible dates."""
    if value is None:
        return None
    match = PARTIAL_DATE.fullmatch(value)
    if not match:
        raise ValueError("must be a date YYYY-MM-DD, or partial YYYY-MM or YYYY")
    year, month, day = match.groups()
    date(int(year), int(month or 1), int(day or 1))  # raises ValueError for 2026-02-30
    return value


class ScreeningHistory(Model):
    """One exclusion-by-history item of the enrolment form: a coded answer ("in the protocol's window before
    the first dose?") and/or the date of the last such event (the more precise; either one excluding excludes)."""

    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    answer: bool | None = None
    last_on: date | None = None


class EnrollmentData(Model):
    arm: Text
    enrolled_at: date
    weight_kg: Decimal | None = Field(default=None, gt=0, le=500)
    car_t_infused_on: date | None = None
    history: list[ScreeningHistory] = Field(
        default_factory=list, max_length=50, description="Exclusions by history (therapy, vaccine, infection)"
    )


class ProductRelease(Model):
    """The lot's release results: each test passed (true), failed (false) or not reported (absent)."""

    released: bool | None = Field(default=None, description="The release decision (QP / QA) for this lot")
    viability_percent: Decimal | None = Field(default=None, ge=0, le=100)
    sterility: bool | None = None
    pathogens: bool | None = None
    mycoplasma: bool | None = None
    endotoxin: bool | None = None
    purity: bool | None = None
    tumorigenicity: bool | None = None
    identity: bool | None = None


class PremedicationGiven(Model):
    drug: Text
    dose_mg: Decimal | None = Field(default=None, gt=0)
    given_at: AwareDatetime | None = None


class DoseData(Model):
    dose_id: Text
    number: int = Field(ge=1, le=1000)
    administered_at: AwareDatetime
    cells_per_kg: Decimal | None = Field(default=None, gt=0)
    total_cells: Decimal | None = Field(default=None, gt=0, description="Cells infused; with the weight, cells/kg")
    weight_kg: Decimal | None = Field(default=None, gt=0, le=500, description="Weight used for this dose")
    lot: Text | None = None
    release: ProductRelease | None = None
    premedication: list[PremedicationGiven] | None = Field(
        default=None, max_length=20, description="Premedication given for this infusion; absent: not recorded"
    )


class LabData(Model):
    result_id: Text
    test: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    loinc: Annotated[str, Field(pattern=r"^\d{1,7}-\d$")] | None = None
    value: str = Field(min_length=1, max_length=40, description="Exact decimal text, or censored text such as '<0.2'")
    unit: Annotated[str, Field(max_length=40)] | None = None
    lln: Decimal | None = None
    uln: Decimal | None = None
    collected_at: AwareDatetime
    baseline: bool = False
    anticoagulated: bool | None = Field(
        default=None,
        description="Subject on anticoagulation when sampled (CTCAE grades INR against baseline only then); "
        "unknown counts as not",
    )
    raw: dict[str, str] | None = Field(
        default=None, description="The sender's values exactly as received (field or item name -> text)"
    )
    flags: list[str] = Field(
        default_factory=list, description="Data-quality flags raised by ingest; never silent fixes"
    )

    @field_validator("value", mode="before")
    @classmethod
    def _exact_text(cls, value: Any) -> Any:
        # Numbers arrive as Decimal (ingest parses JSON floats as Decimal); keep their exact text.
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float):
            raise ValueError("send lab values as JSON numbers or text, parsed exactly; binary floats are refused")
        return value

    @model_validator(mode="after")
    def _needs_a_test(self) -> LabData:
        if self.test is None and self.loinc is None:
            raise ValueError("a lab result needs 'test' (CDISC LBTESTCD) or 'loinc'")
        return self


class AeData(Model):
    ae_id: Text
    version: int = Field(ge=1)
    term: Annotated[str, Field(min_length=1, max_length=500)]
    ctcae_term: Annotated[str, Field(max_length=200)] | None = None
    meddra_code: Annotated[str, Field(pattern=r"^\d{8}$")] | None = None
    grade: int | None = Field(default=None, ge=1, le=5)
    serious: bool | None = None
    seriousness: SeriousnessCriteria | None = None
    relatedness: Relatedness | None = None
    onset: str | None = None
    onset_at: AwareDatetime | None = Field(
        default=None,
        description="Onset date and time where the form records it (the 24 h acute-reaction window needs it); "
        "`onset`, when absent, is its date at the sender's offset",
    )
    end: str | None = None
    outcome: Annotated[str, Field(max_length=100)] | None = None
    awareness_at: AwareDatetime | None = None
    first_received_at: AwareDatetime | None = Field(
        default=None, description="When ingest first received any version of this AE; set by ingest, never overwritten"
    )
    raw: dict[str, str] | None = Field(
        default=None, description="The sender's values exactly as received (field or item name -> text)"
    )
    flags: list[str] = Field(
        default_factory=list, description="Data-quality flags raised by ingest; never silent fixes"
    )

    @field_validator("onset", "end")
    @classmethod
    def _partial_dates(cls, value: str | None) -> str | None:
        return check_partial_date(value)

    @model_validator(mode="before")
    @classmethod
    def _onset_time_in_onset(cls, values: Any) -> Any:
        """A time written into `onset` ("2026-03-02T10:30:00+01:00") is `onset_at`, and `onset` keeps its date."""
        if isinstance(values, dict) and isinstance(values.get("onset"), str) and "T" in values["onset"]:
            values = dict(values)
            if values.get("onset_at") not in (None, values["onset"]):
                raise ValueError("onset carries a time that differs from onset_at")
            values["onset_at"] = values["onset"]
            values["onset"] = values["onset"].split("T", 1)[0]
        return values

    @model_validator(mode="after")
    def _onset_agrees(self) -> AeData:
        if self.onset_at is None:
            return self
        day = self.onset_at.date().isoformat()  # the sender's own calendar date
        if self.onset is None:
            object.__setattr__(self, "onset", day)  # frozen model: set once, during validation
        elif not day.startswith(self.onset):
            raise ValueError(f"onset {self.onset} and onset_at {self.onset_at.isoformat()} name different days")
        return self


TransfusionProduct = Literal["red_cells", "platelets", "other"]


class TransfusionData(Model):
    """A blood-product transfusion: haematological response needs days without one (the protocol says how many).

    `product`: red cells, platelets, or any other blood product (plasma, granulocytes, whole blood); `units`
    and `volume_ml` where the site records them.
    """

    transfusion_id: Text
    product: TransfusionProduct
    administered_at: AwareDatetime
    units: Decimal | None = Field(default=None, gt=0, le=100)
    volume_ml: Decimal | None = Field(default=None, gt=0, le=20000)
    raw: dict[str, str] | None = Field(
        default=None, description="The sender's values exactly as received (field or item name -> text)"
    )


class SampleData(Model):
    """A protocol sample collected (e.g. immunology at baseline and weeks 1, 4, 8): tracked like a visit."""

    sample_id: Text
    kind: Annotated[str, Field(min_length=1, max_length=80)] = Field(
        default="immunology", description="The protocol's sample schedule it belongs to"
    )
    collected_at: AwareDatetime
    visit: Annotated[str, Field(max_length=80)] | None = Field(
        default=None, description="The visit the site filed it under (informational: the schedule uses the time)"
    )


class RecordStatusData(Model):
    """A record deleted or entered in error at the site: a status event, never a silent delete."""

    record_type: Literal["enrollment", "dose", "lab", "ae", "vitals", "ae_review", "transfusion", "sample"]
    record_id: Text = Field(description="dose_id, result_id or ae_id; the subject for an enrolment")
    status: Literal["deleted", "entered_in_error", "restored"]
    reason: Annotated[str, Field(max_length=1000)] | None = None
    changed_at: AwareDatetime | None = None
    replaced_by: Text | None = Field(
        default=None,
        description="For a record taken back because the site re-entered it under another id: that id (an AE's new "
        "ae_id). The new AE is the same case, so its SAE reporting clock starts when this one's did.",
    )

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset_link(handler, self, "replaced_by")


SubjectStudyStatus = Literal["on_study", "withdrawn", "lost_to_follow_up", "died", "completed"]


class SubjectStatusData(Model):
    """Where the subject stands in the study: withdrawal, loss to follow-up, death and completion are statuses,
    never deletions (a withdrawn subject's DLTs still count). `on_study` takes back an earlier status."""

    status: SubjectStudyStatus
    effective_on: date | None = Field(default=None, description="The date the status took effect at the site")
    reason: Annotated[str, Field(max_length=1000)] | None = None


VitalSignName = Literal["temperature_c", "systolic_bp", "diastolic_bp", "heart_rate", "respiratory_rate", "spo2"]
VITAL_SIGN_NAMES: tuple[VitalSignName, ...] = (
    "temperature_c",
    "systolic_bp",
    "diastolic_bp",
    "heart_rate",
    "respiratory_rate",
    "spo2",
)


class VitalsData(Model):
    """One set of vital signs taken at `measured_at` (infusion-day monitoring every 15 minutes, or any visit).

    Canonical units: temperature in degrees Celsius, pressures in mm Hg, rates per minute, SpO2 in %. Ingest
    converts what the formats send (FHIR UCUM `[degF]`, SDTM VSORRESU `F`) and keeps the text in `raw`.
    """

    vitals_id: Text
    measured_at: AwareDatetime
    temperature_c: Decimal | None = Field(default=None, ge=25, le=46)
    systolic_bp: Decimal | None = Field(default=None, ge=20, le=300)
    diastolic_bp: Decimal | None = Field(default=None, ge=10, le=200)
    heart_rate: Decimal | None = Field(default=None, ge=10, le=300)
    respiratory_rate: Decimal | None = Field(default=None, ge=1, le=80)
    spo2: Decimal | None = Field(default=None, ge=30, le=100)
    dose_id: Text | None = Field(default=None, description="The infusion this monitoring belongs to, if the form says")
    raw: dict[str, str] | None = Field(
        default=None, description="The sender's values exactly as received (field or item name -> text)"
    )

    @field_validator(*VITAL_SIGN_NAMES, mode="before")
    @classmethod
    def _exact_numbers(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError("send vital signs as JSON numbers or text, parsed exactly; binary floats are refused")
        return value

    @model_validator(mode="after")
    def _some_sign(self) -> VitalsData:
        if all(getattr(self, name) is None for name in VITAL_SIGN_NAMES):
            raise ValueError(f"a vitals record needs at least one of {list(VITAL_SIGN_NAMES)}")
        return self

    def measured(self) -> list[VitalSignName]:
        return [name for name in VITAL_SIGN_NAMES if getattr(self, name) is not None]


class AeReviewData(Model):
    """The site's AE assessment at a visit: "AE review done" (`new_aes` false: none new since the last review).

    The evidence that a delayed-reaction visit (weeks 4, 8, 12, 24) asked about AEs: without it, silence is not
    "no AEs". New AEs found at the review are sent as `ae` events as usual (`new_aes` true). Carried by CDASH's
    AEYN ("Any adverse events?") in ODM and SDTM SUPPAE-style rows, and in FHIR by an Observation coded
    `sentinel-ae-review` (no standard code exists).
    """

    review_id: Text
    assessed_at: AwareDatetime
    visit: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        default=None, description="The protocol visit name (e.g. 'week 4'), if the form names it"
    )
    new_aes: bool = False
    raw: dict[str, str] | None = None


class InboundType(StrEnum):
    ENROLLMENT = "enrollment"
    DOSE = "dose"
    LAB = "lab"
    AE = "ae"
    STATUS = "status"
    SUBJECT_STATUS = "subject_status"
    VITALS = "vitals"
    AE_REVIEW = "ae_review"
    TRANSFUSION = "transfusion"
    SAMPLE = "sample"


INBOUND_DATA: dict[InboundType, type[Model]] = {
    InboundType.ENROLLMENT: EnrollmentData,
    InboundType.DOSE: DoseData,
    InboundType.LAB: LabData,
    InboundType.AE: AeData,
    InboundType.STATUS: RecordStatusData,
    InboundType.SUBJECT_STATUS: SubjectStatusData,
    InboundType.VITALS: VitalsData,
    InboundType.AE_REVIEW: AeReviewData,
    InboundType.TRANSFUSION: TransfusionData,
    InboundType.SAMPLE: SampleData,
}


class InboundHeader(Model):
    """The part of a canonical event that is the same for every type; `data` is checked by type."""

    id: Text
    type: InboundType
    study: Text
    site: Text
    subject: Text
    data: dict[str, Any]


# --- Kafka envelopes --------------------------------------------------------------------------------


class EnvelopeBase(Model):
    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    subject: str
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    trialid: str


class ClinicalEnvelopeBase(EnvelopeBase):
    siteid: str
    receivedat: AwareDatetime
    senderid: str


class AeReported(ClinicalEnvelopeBase):
    type: Literal["ae.reported"] = "ae.reported"
    data: AeData


class LabResulted(ClinicalEnvelopeBase):
    type: Literal["lab.resulted"] = "lab.resulted"
    data: LabData


class DoseAdministered(ClinicalEnvelopeBase):
    type: Literal["dose.administered"] = "dose.administered"
    data: DoseData


class SubjectEnrolled(ClinicalEnvelopeBase):
    type: Literal["subject.enrolled"] = "subject.enrolled"
    data: EnrollmentData


class RecordStatusChanged(ClinicalEnvelopeBase):
    type: Literal["record.status_changed"] = "record.status_changed"
    data: RecordStatusData


class SubjectStatusChanged(ClinicalEnvelopeBase):
    type: Literal["subject.status_changed"] = "subject.status_changed"
    data: SubjectStatusData


class VitalsRecorded(ClinicalEnvelopeBase):
    type: Literal["vitals.recorded"] = "vitals.recorded"
    data: VitalsData


class AeReviewRecorded(ClinicalEnvelopeBase):
    type: Literal["ae_review.recorded"] = "ae_review.recorded"
    data: AeReviewData


class TransfusionAdministered(ClinicalEnvelopeBase):
    type: Literal["transfusion.administered"] = "transfusion.administered"
    data: TransfusionData


class SampleCollected(ClinicalEnvelopeBase):
    type: Literal["sample.collected"] = "sample.collected"
    data: SampleData


ClinicalEnvelope = Annotated[
    AeReported
    | LabResulted
    | DoseAdministered
    | SubjectEnrolled
    | RecordStatusChanged
    | SubjectStatusChanged
    | VitalsRecorded
    | AeReviewRecorded
    | TransfusionAdministered
    | SampleCollected,
    Field(discriminator="type"),
]
CLINICAL_ADAPTER: TypeAdapter[ClinicalEnvelope] = TypeAdapter(ClinicalEnvelope)

ENVELOPE_FOR_INBOUND: dict[InboundType, type[ClinicalEnvelopeBase]] = {
    InboundType.ENROLLMENT: SubjectEnrolled,
    InboundType.DOSE: DoseAdministered,
    InboundType.LAB: LabResulted,
    InboundType.AE: AeReported,
    InboundType.STATUS: RecordStatusChanged,
    InboundType.SUBJECT_STATUS: SubjectStatusChanged,
    InboundType.VITALS: VitalsRecorded,
    InboundType.AE_REVIEW: AeReviewRecorded,
    InboundType.TRANSFUSION: TransfusionAdministered,
    InboundType.SAMPLE: SampleCollected,
}


class AwarenessBasis(StrEnum):
    SITE = "site"
    RECEIPT = "receipt"


class SaeData(Model):
    """An AE that meets ICH E2A seriousness; the reporting clock starts at `awareness_at`."""

    site_id: str
    subject_id: str
    ae_id: str
    ae_version: int
    term: str
    grade: int | None
    criteria: list[str]
    relatedness: Relatedness | None
    outcome: str | None
    onset: str | None
    awareness_at: AwareDatetime
    awareness_basis: AwarenessBasis
    received_at: AwareDatetime
    source_event_id: str
    clock_from_ae_id: str | None = None
    """The AE the site took back and re-entered as this one: `awareness_at` is that AE's clock (the earlier)."""

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset_link(handler, self, "clock_from_ae_id")


class SaeDetected(EnvelopeBase):
    """First time this AE is serious: opens the reporting obligation."""

    type: Literal["sae.detected"] = "sae.detected"
    data: SaeData


class SaeUpdated(EnvelopeBase):
    """A follow-up of an AE already serious (new version, worse grade or more criteria)."""

    type: Literal["sae.updated"] = "sae.updated"
    data: SaeData


class SaeWithdrawalData(Model):
    """The site took back (entered in error, deleted) an AE that was serious: the SAE is no longer to be reported.

    `awareness_at` is the clock the SAE had (a restore brings the SAE back with it: the clock never restarts later);
    `changed_at` is when the site changed the status (else our receipt of it)."""

    site_id: str
    subject_id: str
    ae_id: str
    ae_version: int = Field(description="The AE's latest version on file")
    term: str
    status: Literal["deleted", "entered_in_error"]
    reason: Annotated[str, Field(max_length=1000)] | None = Field(default=None, description="The site's reason")
    changed_at: AwareDatetime
    awareness_at: AwareDatetime
    awareness_basis: AwarenessBasis
    received_at: AwareDatetime
    source_event_id: str


class SaeWithdrawn(EnvelopeBase):
    """An SAE's AE taken back by the site: notify cancels the open report obligation and tells who was paged.

    Restored, the SAE comes back as `sae.detected` with its original awareness. Notify deploys before safety: an
    older notify dead-letters this type (pages the operator) rather than dropping it."""

    type: Literal["sae.withdrawn"] = "sae.withdrawn"
    data: SaeWithdrawalData


class LabToxicityData(Model):
    """A graded lab result at or above the protocol's threshold and worse than the subject's baseline.

    `floor`: the grade is the lowest the data allows (a limit missing, a censored value): "at least grade N".
    `received_at`: when Sentinel learned of it (the review clock starts there; absent from older producers).
    `sequence`: its number among the signals safety raised for the subject's term, in the order it raised them
    (1, 2, ...): a lower number was raised before, whatever lane brought it later. Safety numbers what it grades from
    lab results; absent from older producers and for vital signs (notify then compares grades).
    """

    site_id: str
    subject_id: str
    result_id: str
    test: str
    term: str
    grade: int
    baseline_grade: int | None
    previous_grade: int | None
    value: str
    unit: str | None
    reason: str
    collected_at: AwareDatetime
    source_event_id: str
    floor: bool = False
    received_at: AwareDatetime | None = None
    measured_by: Literal["lab", "vitals"] = "lab"
    """`vitals`: a CTCAE finding graded from vital signs (`test` is the VSTESTCD, `result_id` the vitals id)."""
    sequence: int | None = None


class LabToxicity(EnvelopeBase):
    type: Literal["lab.toxicity"] = "lab.toxicity"
    data: LabToxicityData


class StandingResult(Model):
    """The result a withdrawal leaves standing, as a finding's alert shows one (`LabToxicityData`'s fields)."""

    test: str
    value: str
    unit: str | None
    collected_at: AwareDatetime
    reason: str
    floor: bool = False
    measured_by: Literal["lab", "vitals"] = "lab"


class LabToxicityWithdrawalData(Model):
    """A term's finding signalled at `withdrawn_grade` no longer stands: the results behind it were taken back,
    corrected, or judged again against a baseline that came later.

    `standing_grade`: the worst of the term's active results that is still a finding (at or above the protocol's
    threshold, worse than baseline), from result `standing_result_id` (`standing_result`: what the alert shows of it);
    None when none is. Equal to `withdrawn_grade` when the result that paged is gone but another result of its grade
    stands: the finding stays, shown by the result that stands. `why`: what changed, in words for the officer.
    `sequence`: the number of the last `lab.toxicity` safety raised for the term before it
    (`LabToxicityData.sequence`; 0 for a term signalled before the numbering, and for vital signs): it withdraws the
    findings numbered up to it, and one numbered after it is news, whatever lane brought either."""

    site_id: str
    subject_id: str
    term: str
    withdrawn_grade: int
    standing_grade: int | None
    standing_result_id: str | None
    why: str
    source_event_id: str
    received_at: AwareDatetime
    sequence: int
    withdrawn_result_id: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """The one result whose finding this withdraws, when one result alone carried it (a vitals set; a lab result
    whose grade another result still carries): notify withdraws it only from an alert that shows that result. Equal to
    `standing_result_id`: the result was corrected within its grade, and `standing_result` is what it now says (a
    revision: the alert showing it must not keep the value or time the site replaced). Left out of the JSON when
    None, so a notify older than it still reads every other withdrawal."""
    standing_result: StandingResult | None = Field(default=None, exclude_if=lambda value: value is None)
    """So the alert shows the value that stands, not the one taken back. Left out of the JSON when None."""


class LabToxicityWithdrawn(EnvelopeBase):
    """Notify cancels the term's open review when nothing stands (and tells who was paged), or shows the grade and the
    result that stand, the review kept. A worse result later is `lab.toxicity` again and pages. Vital-sign findings
    are withdrawn by it too (a vitals set corrected or taken back). Always on the routine lane (`shared.lanes`).
    Notify deploys before safety: an older notify dead-letters this type (pages the operator) rather than dropping
    it."""

    type: Literal["lab.toxicity_withdrawn"] = "lab.toxicity_withdrawn"
    data: LabToxicityWithdrawalData


class DltData(Model):
    """An AE inside a subject's DLT window that meets (or no longer meets) a protocol DLT criterion."""

    dlt_id: str
    site_id: str
    subject_id: str
    arm: str | None
    ae_id: str
    ae_version: int
    term: str
    grade: int | None
    relatedness: Relatedness | None
    criterion: str
    window_start: AwareDatetime | None
    window_end: AwareDatetime | None
    reason: str
    source_event_id: str


class DltSuspected(EnvelopeBase):
    """Automatic classification: a safety officer must confirm or reject it (review obligation)."""

    type: Literal["dlt.suspected"] = "dlt.suspected"
    data: DltData


class DltWithdrawn(EnvelopeBase):
    """A follow-up no longer meets the criteria (e.g. relatedness downgraded) and it was not confirmed."""

    type: Literal["dlt.withdrawn"] = "dlt.withdrawn"
    data: DltData


class DltDecisionData(Model):
    dlt_id: str
    subject_id: str
    arm: str | None
    decision: Literal["confirmed", "rejected"]
    decided_by: str
    reason: str
    decided_at: AwareDatetime
    revises: Literal["confirmed", "rejected"] | None = Field(default=None, exclude_if=lambda value: value is None)
    """The decision this one reverses (a re-adjudication). Left out of a first decision's JSON, which stays what
    a notify older than revisions reads (it refuses unknown fields)."""


class DltDecided(EnvelopeBase):
    """A safety officer confirmed or rejected a suspected DLT (closes notify's review obligation), or revised an
    earlier decision (`revises`)."""

    type: Literal["dlt.decided"] = "dlt.decided"
    data: DltDecisionData


CohortDecisionName = Literal[
    "enrolling", "evaluating", "expand", "escalate", "stop", "hold", "awaiting_dlt_review", "recommend"
]


class CohortData(Model):
    arm: str
    enrolled: int
    evaluable: int
    dlt_confirmed: int
    dlt_suspected: int
    decision: CohortDecisionName
    previous_decision: CohortDecisionName | None
    next_arm: str | None
    reason: str
    not_evaluable: int = 0
    """Subjects who can no longer be evaluated (withdrawn without a DLT, infusions missing): to be replaced."""
    replacements_needed: int = 0
    stopping: bool = False


class CohortDecision(EnvelopeBase):
    """The 3+3 state of an arm changed (escalate, expand, stop ...)."""

    type: Literal["cohort.decision"] = "cohort.decision"
    data: CohortData


class StoppingRuleFired(EnvelopeBase):
    """An arm reached the protocol's stopping number of DLTs (confirmed or suspected): review at once."""

    type: Literal["stopping_rule.fired"] = "stopping_rule.fired"
    data: CohortData


class DoseRecommendationData(Model):
    """The 3+3's final answer: the recommended arm (RP2D/MTD), or none tolerated, with the reason."""

    recommended_arm: str | None
    basis: Literal["mtd", "highest_arm_cleared", "no_tolerated_dose", "withdrawn"]
    previous_arm: str | None
    reason: str
    arms: list[CohortData]


class DoseRecommended(EnvelopeBase):
    """The recommended dose was declared (or changed, or withdrawn by later data): the committee must review it."""

    type: Literal["dose.recommended"] = "dose.recommended"
    data: DoseRecommendationData


class AssessmentMissedData(Model):
    site_id: str
    subject_id: str
    assessment: str
    due_from: AwareDatetime
    due_until: AwareDatetime
    missing: list[str]
    category: Literal["visit", "sample"] = "visit"
    """`sample`: a protocol sample (immunology) not collected in its window: the site is told, not the SRC."""


class AssessmentMissed(EnvelopeBase):
    type: Literal["assessment.missed"] = "assessment.missed"
    data: AssessmentMissedData


ResponseLevel = Literal["complete", "partial", "none"]


class ResponseData(Model):
    """A subject's haematological response (CR/PR by the protocol's definition) and how it changed.

    `since`: the first of the two qualifying counts (the response's start, from which its duration runs);
    `lost_at`: the count below the level, or the transfusion, that ended it; `previous_*`: what it was before.
    """

    site_id: str
    subject_id: str
    level: ResponseLevel
    previous_level: ResponseLevel
    previous_since: AwareDatetime | None
    previous_confirmed_at: AwareDatetime | None
    lost_at: AwareDatetime
    duration_days: Decimal
    reason: str


class ResponseLost(EnvelopeBase):
    """A confirmed response (CR or PR) no longer holds: lost, or a CR fallen to PR."""

    type: Literal["response.lost"] = "response.lost"
    data: ResponseData


class ProtocolDeviationData(Model):
    site_id: str
    subject_id: str
    arm: str | None
    kind: str
    detail: str
    pages: bool = False
    """Puts subjects at risk (enrolled above an arm under DLT review, held or stopped): paged until acknowledged."""
    notify_roles: list[str] = Field(
        default_factory=list, description="Roles the protocol names for this kind, besides the DLT roles"
    )


class ProtocolDeviation(EnvelopeBase):
    type: Literal["protocol.deviation"] = "protocol.deviation"
    data: ProtocolDeviationData


class DataQualityData(Model):
    """Something in a record the rules could not trust as given: the site must look at it.

    `code` names the finding (e.g. `unmapped_term`, `implausible_value`, `unknown_unit`,
    `inconsistent_seriousness`); `detail` says what was seen and, where known, what was likely meant.
    """

    site_id: str
    subject_id: str
    record_type: str
    record_id: str
    code: str
    detail: str
    source_event_id: str


class DataQualityFlagged(EnvelopeBase):
    """A data-quality finding for the site contact (not a clinical signal, but never silent)."""

    type: Literal["data_quality.flagged"] = "data_quality.flagged"
    data: DataQualityData


SusarChange = Literal["detected", "upgraded", "follow_up", "withdrawn", "clock_earlier"]
"""`clock_earlier`: knowledge processed late (an AE version received before the one that started the clock)
moves day 0, or the 7-day clock of an upgrade, earlier: every deadline moves with it (it may already be overdue)."""


class SusarData(Model):
    """An SAE the sponsor must report expedited: serious, related (site or sponsor), unexpected per the RSI.

    `clock_start` is day 0 (the sponsor's first awareness of a case meeting the criteria); `upgraded_at` is
    when the sponsor learnt that it is fatal or life-threatening, when that came later (EU CTR Art. 42(2)(c)).
    `report_version` counts the AE versions since it became serious (1 = the initial report).
    """

    case_id: str
    site_id: str
    subject_id: str
    ae_id: str
    ae_version: int
    report_version: int
    term: str
    meddra_code: str | None
    grade: int | None
    criteria: list[str]
    fatal_or_life_threatening: bool
    site_relatedness: Relatedness | None
    sponsor_causality: Literal["related", "not_related"] | None
    expectedness: Literal["expected", "unexpected"]
    expectedness_basis: Literal["rsi_proposal", "officer"]
    rsi_version: str
    change: SusarChange
    clock_start: AwareDatetime
    clock_basis: str
    upgraded_at: AwareDatetime | None = None
    changed_at: AwareDatetime
    reason: str
    source_event_id: str


class SusarDetected(EnvelopeBase):
    """An SAE became a SUSAR: notify opens one reporting obligation per recipient the protocol names."""

    type: Literal["susar.detected"] = "susar.detected"
    data: SusarData


class SusarUpdated(EnvelopeBase):
    """A SUSAR became fatal or life-threatening (`change` = upgraded), has new information (follow_up), or its
    day 0 or 7-day clock turned out earlier than signalled (clock_earlier: the deadlines move earlier)."""

    type: Literal["susar.updated"] = "susar.updated"
    data: SusarData


class SusarWithdrawn(EnvelopeBase):
    """No longer a SUSAR (confirmed expected, or causality withdrawn by the site with no sponsor causality)."""

    type: Literal["susar.withdrawn"] = "susar.withdrawn"
    data: SusarData


class AcuteReactionData(Model):
    """An AE with onset within the protocol's window (24 h) after an infusion, at or above its alert grade.

    `onset_precision`: `time` when the onset time is known; `date` when only its day is, and that day is the
    infusion's or the next (counted as acute: the cautious reading, said so in `reason`).
    `dlt_grade`: the grade is at or above the grade the DLT criteria use for infusion reactions.
    """

    site_id: str
    subject_id: str
    ae_id: str
    ae_version: int
    term: str
    grade: int
    previous_grade: int | None
    onset: str | None
    onset_at: AwareDatetime | None
    onset_precision: Literal["time", "date"]
    dose_id: str
    dose_number: int
    infusion_at: AwareDatetime
    hours_after_infusion: Decimal | None
    dlt_grade: bool
    reason: str
    received_at: AwareDatetime
    source_event_id: str


class AcuteReactionDetected(EnvelopeBase):
    """An acute infusion reaction (or a worse grade of one): the safety officer must review it."""

    type: Literal["acute_reaction.detected"] = "acute_reaction.detected"
    data: AcuteReactionData


class AcuteReactionWithdrawalData(Model):
    """The site took back (entered in error, deleted) an AE signalled as an acute reaction: its review is no longer
    owed. `changed_at` is when the site changed the status (else our receipt of it)."""

    site_id: str
    subject_id: str
    ae_id: str
    term: str
    grade: int
    dose_number: int
    status: Literal["deleted", "entered_in_error"]
    reason: Annotated[str, Field(max_length=1000)] | None = Field(default=None, description="The site's reason")
    changed_at: AwareDatetime
    received_at: AwareDatetime
    source_event_id: str


class AcuteReactionWithdrawn(EnvelopeBase):
    """An acute reaction's AE taken back by the site: notify cancels the open review and tells who was paged.

    Restored, the reaction comes back as `acute_reaction.detected`. Notify deploys before safety: an older notify
    dead-letters this type (pages the operator) rather than dropping it."""

    type: Literal["acute_reaction.withdrawn"] = "acute_reaction.withdrawn"
    data: AcuteReactionWithdrawalData


SignalEnvelope = Annotated[
    SaeDetected
    | SaeUpdated
    | SaeWithdrawn
    | LabToxicity
    | LabToxicityWithdrawn
    | DltSuspected
    | DltWithdrawn
    | DltDecided
    | CohortDecision
    | StoppingRuleFired
    | DoseRecommended
    | AssessmentMissed
    | ProtocolDeviation
    | DataQualityFlagged
    | SusarDetected
    | SusarUpdated
    | SusarWithdrawn
    | AcuteReactionDetected
    | AcuteReactionWithdrawn
    | ResponseLost,
    Field(discriminator="type"),
]
SIGNAL_ADAPTER: TypeAdapter[SignalEnvelope] = TypeAdapter(SignalEnvelope)


def message_key(trial_id: str, subject_id: str) -> bytes:
    """Key by subject so one subject's events keep their order on one partition."""
    return f"{trial_id}:{subject_id}".encode()
