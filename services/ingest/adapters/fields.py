"""Pure: canonical payloads from a sender's fields, once an adapter has named them with our field names.

ODM items, REDCap fields and SDTM columns all end here, so every format gets the same normalisation, the
same flags and the same rule: a value we cannot read is kept raw and flagged, never guessed; an empty
seriousness answer is unknown, never 'not serious'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services.ingest.adapters import normalise_values as nv
from services.ingest.adapters.onset_time import onset_instant
from services.ingest.sources import CodeLists
from shared.events import (
    AeData,
    DoseData,
    EnrollmentData,
    LabData,
    PremedicationGiven,
    ProductRelease,
    RecordStatusData,
    ScreeningHistory,
    SeriousnessCriteria,
    SubjectStatusData,
    SubjectStudyStatus,
)

CRITERIA = ("death", "life_threatening", "hospitalization", "disability", "congenital_anomaly", "medically_important")
StatusName = Literal["deleted", "entered_in_error", "restored"]
STATUS_WORDS: dict[str, StatusName] = {
    "DELETED": "deleted",
    "REMOVED": "deleted",
    "REMOVE": "deleted",
    "INACTIVATED": "deleted",
    "INVALID": "deleted",
    "AUTO-REMOVED": "deleted",
    "ENTERED-IN-ERROR": "entered_in_error",
    "ENTERED IN ERROR": "entered_in_error",
    "ENTERED_IN_ERROR": "entered_in_error",
    "RESTORED": "restored",
}


class FieldError(ValueError):
    """A required value is missing or unreadable; `field` is our field name, the adapter adds the location."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def status_of(text: str | None) -> StatusName | None:
    """A record status word (ODM TransactionType, OpenClinica Status, FHIR status) that retracts a record."""
    if not text:
        return None
    return STATUS_WORDS.get(text.strip().upper())


def record_status(
    record_type: Literal["enrollment", "dose", "lab", "ae", "vitals", "ae_review", "transfusion", "sample"],
    record_id: str,
    status: StatusName,
    reason: str | None,
    *,
    changed_at: datetime | None = None,
    replaced_by: str | None = None,
) -> RecordStatusData:
    """`changed_at`: when the site changed the status, where its EDC's audit says (else safety uses our receipt);
    `replaced_by`: the id the site re-entered the record under, when its form has an item for it."""
    replacement = (replaced_by or "").strip()[:200] or None
    if status == "restored":
        replacement = None
    return RecordStatusData(
        record_type=record_type,
        record_id=record_id[:200],
        status=status,
        reason=reason,
        changed_at=changed_at,
        replaced_by=replacement,
    )


def _optional(field: str, flags: list[str], read: Any, text: str | None, *args: Any) -> Any:
    try:
        return read(text, *args)
    except nv.UnreadableValue:
        flags.append(f"UNMAPPED_VALUE:{field}")
        return None


def ae_from_fields(
    fields: Mapping[str, str], *, ae_id: str, raw: Mapping[str, str], codelists: CodeLists, zone: ZoneInfo
) -> AeData:
    flags: list[str] = []
    term = (fields.get("term") or "").strip()
    if not term:
        raise FieldError("term", "an adverse event needs its term (verbatim AE term)")
    serious = _optional("serious", flags, nv.serious, fields.get("serious"), codelists.yes_no)
    ticked: dict[str, bool] = {}
    for name in CRITERIA:
        answer = _optional(name, flags, nv.yes_no, fields.get(name), codelists.yes_no)
        if answer is not None:
            ticked[name] = answer
    grade = _optional("grade", flags, nv.grade, fields.get("grade"), codelists.grade)
    outcome = _optional("outcome", flags, nv.outcome, fields.get("outcome"), codelists.outcome)
    onset = _optional("onset", flags, nv.partial_date, fields.get("onset"))
    onset_text = fields.get("onset")
    if onset is not None and len(onset) == 10 and (fields.get("onset_time") or "").strip():
        onset_text = f"{onset}T{fields['onset_time'].strip()}"  # a separate time item (CDASH AESTTIM)
    onset_at = onset_instant(onset_text, zone=zone, flags=flags) if onset is not None and len(onset) == 10 else None
    end = _optional("end", flags, nv.partial_date, fields.get("end"))
    ongoing = _optional("ongoing", flags, nv.yes_no, fields.get("ongoing"), codelists.yes_no)
    try:
        awareness_at = nv.moment(fields.get("awareness_at"), zone=zone, flags=flags, field="awareness_at")
    except nv.UnreadableValue:
        flags.append("UNMAPPED_VALUE:awareness_at")
        awareness_at = None
    version = ae_version(fields.get("version"))
    meddra = (fields.get("meddra_code") or "").strip()
    if meddra and not (meddra.isascii() and meddra.isdigit() and len(meddra) == 8):
        flags.append("UNMAPPED_VALUE:meddra_code")
        meddra = ""
    criteria = SeriousnessCriteria(**ticked) if ticked else None
    flags.extend(seriousness_flags(serious, criteria, outcome, grade))
    if onset is not None and len(onset) < 10:
        flags.append("PARTIAL_ONSET")
    if end and ongoing:
        flags.append("END_WITH_ONGOING")
    if end and outcome == "NOT RECOVERED/NOT RESOLVED":
        flags.append("END_WITH_NOT_RECOVERED")
    data: dict[str, Any] = {
        "ae_id": ae_id[:200],
        "version": version if version is not None and version >= 1 else 1,
        "term": term[:500],
        "ctcae_term": (fields.get("ctcae_term") or "").strip()[:200] or None,
        "meddra_code": meddra or None,
        "grade": grade,
        "serious": serious,
        "seriousness": criteria,
        "relatedness": _optional(
            "relatedness", flags, nv.relatedness, fields.get("relatedness"), codelists.relatedness
        ),
        "onset": onset,
        "onset_at": onset_at,
        "end": end,
        "outcome": outcome,
        "awareness_at": awareness_at,
        "raw": dict(raw),
        "flags": flags,
    }
    return AeData.model_validate(data)


def ae_version(text: str | None) -> int | None:
    """The sender's AE version number, None when it sent none (ingest then numbers versions itself)."""
    value = (text or "").strip()
    if value.isascii() and value.isdigit() and nv.small_int(value) is None:
        raise FieldError("version", f"the version number is too large: {value[:40]!r}")
    return nv.small_int(value)


def seriousness_flags(
    serious: bool | None, criteria: SeriousnessCriteria | None, outcome: str | None, grade: int | None
) -> list[str]:
    """Contradictions are accepted and flagged; nothing here lowers seriousness."""
    ticked = criteria.ticked() if criteria else []
    fatal = outcome == "FATAL" or grade == 5
    flags = []
    if serious is not True and (ticked or fatal):
        flags.append("SERIOUS_FLAG_INCONSISTENT")
    if serious is True and not ticked:
        flags.append("SERIOUS_WITHOUT_CRITERIA")
    if fatal and (criteria is None or not criteria.death):
        flags.append("FATAL_WITHOUT_DEATH_CRITERION")
    return flags


def lab_from_fields(
    fields: Mapping[str, str],
    *,
    result_id: str,
    raw: Mapping[str, str],
    zone: ZoneInfo,
    baseline: bool,
    flags: list[str] | None = None,
) -> LabData | None:
    """None when the result is blank (an empty analyte on a wide lab form is no result)."""
    flags = list(flags or [])
    value = (fields.get("value") or "").strip()
    if not value:
        return None
    test = (fields.get("test") or "").strip() or None
    loinc = (fields.get("loinc") or "").strip() or None
    if test is None and loinc is None:
        raise FieldError("test", "a lab result needs its test code (LBTESTCD) or LOINC code")
    collected_text = fields.get("collected_at")
    try:
        collected_at = nv.moment(collected_text, zone=zone, flags=flags, field="collected_at")
    except nv.UnreadableValue as exc:
        raise FieldError("collected_at", str(exc)) from exc
    if collected_at is None:
        raise FieldError("collected_at", "a lab result needs its collection date-time")
    shown = nv.lab_value(value)
    if shown[0] in "<>":
        flags.append("CENSORED_VALUE")
    elif nv.decimal_or_none(shown) is None:
        flags.append("NON_NUMERIC_RESULT")
    unit = nv.unit(fields.get("unit"))
    if unit is not None and unit != (fields.get("unit") or "").strip():
        flags.append("UNIT_SPELLING_NORMALISED")
    lln, uln = _decimal_field("lln", fields, flags), _decimal_field("uln", fields, flags)
    if lln is None and uln is None and fields.get("range"):
        parsed = nv.range_from_text(fields.get("range"))
        if parsed is None:
            flags.append("UNMAPPED_VALUE:range")
        else:
            lln, uln = parsed
            flags.append("REF_RANGE_FROM_TEXT")
    if not nv.range_fits_unit(test, unit, uln):
        flags.append("UNIT_RANGE_MISMATCH")
    is_baseline = baseline or _optional("baseline", flags, nv.yes_no, fields.get("baseline")) is True
    anticoagulated = _optional("anticoagulated", flags, nv.yes_no, fields.get("anticoagulated"))
    try:
        return LabData(
            result_id=result_id[:200],
            test=test[:40] if test else None,
            loinc=loinc,
            value=shown[:40],
            unit=unit[:40] if unit else None,
            lln=lln,
            uln=uln,
            collected_at=collected_at,
            baseline=is_baseline,
            anticoagulated=anticoagulated,
            raw=dict(raw),
            flags=flags,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise FieldError(str(first["loc"][0]) if first["loc"] else "value", first["msg"]) from exc


def _decimal_field(name: str, fields: Mapping[str, str], flags: list[str]) -> Decimal | None:
    text = (fields.get(name) or "").strip()
    if not text:
        return None
    value = nv.decimal_or_none(text)
    if value is None:
        flags.append(f"UNMAPPED_VALUE:{name}")
    return value


RELEASE_TESTS = ("sterility", "pathogens", "mycoplasma", "endotoxin", "purity", "tumorigenicity", "identity")
HISTORY_FIELD = re.compile(r"^history(_on)?\.([a-z][a-z0-9_]{0,39})$")
"""Enrolment fields for exclusions by history: `history.<code>` (a yes/no answer), `history_on.<code>` (a date)."""


def dose_from_fields(fields: Mapping[str, str], *, dose_id: str, zone: ZoneInfo) -> DoseData:
    flags: list[str] = []
    try:
        administered = nv.moment(fields.get("administered_at"), zone=zone, flags=flags, field="administered_at")
    except nv.UnreadableValue as exc:
        raise FieldError("administered_at", str(exc)) from exc
    if administered is None:
        raise FieldError("administered_at", "a dose needs its administration date-time")
    text = (fields.get("number") or "1").strip()
    number = nv.small_int(text)
    if number is None:
        raise FieldError("number", f"the infusion number must be a whole number (ASCII digits), got {text[:40]!r}")
    numbers = {name: _positive(fields, name) for name in ("cells_per_kg", "total_cells", "weight_kg")}
    lot = (fields.get("lot") or "").strip()[:200] or None
    try:
        return DoseData(
            dose_id=dose_id[:200],
            number=number,
            administered_at=administered,
            cells_per_kg=numbers["cells_per_kg"],
            total_cells=numbers["total_cells"],
            weight_kg=numbers["weight_kg"],
            lot=lot,
            release=_release(fields),
            premedication=_premedication(fields, zone),
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise FieldError(".".join(str(p) for p in error["loc"]) or "dose", error["msg"]) from exc


def _positive(fields: Mapping[str, str], name: str) -> Decimal | None:
    text = (fields.get(name) or "").strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise FieldError(name, f"not a positive number: {text[:40]!r}") from exc
    if not value.is_finite() or value <= 0:
        raise FieldError(name, f"not a positive number: {text[:40]!r}")
    return value


def _release(fields: Mapping[str, str]) -> ProductRelease | None:
    """Release results as the form carries them; an unreadable pass/fail is refused, never read as a pass."""
    names = ("released", *RELEASE_TESTS)
    given = {name: fields.get(f"release_{name}") for name in names}
    viability = (fields.get("release_viability_percent") or "").strip()
    if not viability and not any((v or "").strip() for v in given.values()):
        return None
    answers: dict[str, bool | None] = {}
    for name, text in given.items():
        try:
            answers[name] = nv.yes_no(text, RELEASE_WORDS)
        except nv.UnreadableValue as exc:
            raise FieldError(f"release_{name}", str(exc)) from exc
    try:
        percent = Decimal(viability.rstrip("%").strip()) if viability else None
    except InvalidOperation as exc:
        raise FieldError("release_viability_percent", f"not a number: {viability[:40]!r}") from exc
    return ProductRelease(viability_percent=percent, **answers)


RELEASE_WORDS = {"pass": True, "passed": True, "negative": True, "fail": False, "failed": False, "positive": False}
"""Release certificates say pass/fail; a sterility or pathogen test is passed when negative."""


def _premedication(fields: Mapping[str, str], zone: ZoneInfo) -> list[PremedicationGiven] | None:
    drug = (fields.get("premedication_drug") or "").strip()
    if not drug:
        return None  # not recorded: the premedication rule is not judged
    if drug.casefold() in {"none", "not given", "no"}:
        return []
    flags: list[str] = []
    try:
        given_at = nv.moment(
            fields.get("premedication_given_at"), zone=zone, flags=flags, field="premedication_given_at"
        )
    except nv.UnreadableValue as exc:
        raise FieldError("premedication_given_at", str(exc)) from exc
    milligrams = (fields.get("premedication_dose_mg") or "").strip().lower().removesuffix("mg")  # "5 mg" is 5
    dose = _positive({"premedication_dose_mg": milligrams}, "premedication_dose_mg")
    return [PremedicationGiven(drug=drug[:200], dose_mg=dose, given_at=given_at)]


def enrollment_from_fields(fields: Mapping[str, str]) -> EnrollmentData:
    arm = (fields.get("arm") or "").strip()
    if not arm:
        raise FieldError("arm", "an enrolment needs the arm")
    enrolled = _full_date("enrolled_at", fields.get("enrolled_at"), required=True)
    infused = _full_date("car_t_infused_on", fields.get("car_t_infused_on"), required=False)
    weight = nv.decimal_or_none(fields.get("weight_kg"))
    try:
        return EnrollmentData(
            arm=arm[:200], enrolled_at=enrolled, weight_kg=weight, car_t_infused_on=infused, history=_history(fields)
        )
    except ValidationError as exc:
        raise FieldError("weight_kg", exc.errors()[0]["msg"]) from exc


def _history(fields: Mapping[str, str]) -> list[ScreeningHistory]:
    answers: dict[str, dict[str, Any]] = {}
    for name, text in fields.items():
        match = HISTORY_FIELD.match(name)
        if match is None or not (text or "").strip():
            continue
        entry = answers.setdefault(match.group(2), {"code": match.group(2)})
        if match.group(1):
            entry["last_on"] = _full_date(name, text, required=False)
        else:
            try:
                entry["answer"] = nv.yes_no(text)
            except nv.UnreadableValue as exc:
                raise FieldError(name, str(exc)) from exc
    return [ScreeningHistory.model_validate(entry) for entry in answers.values()]


def _full_date(field: str, text: str | None, *, required: bool) -> Any:
    try:
        value = nv.partial_date(text)
    except nv.UnreadableValue as exc:
        raise FieldError(field, str(exc)) from exc
    if value is None:
        if required:
            raise FieldError(field, "a date is required")
        return None
    if len(value) != 10:
        raise FieldError(field, f"a full date is required, got the partial date {value!r}")
    return date.fromisoformat(value)


SUBJECT_STATUS_WORDS: dict[str, SubjectStudyStatus] = {
    # CDISC DS (DSDECOD, NCOMPLT codelist), FHIR ResearchSubject.status, and what CRFs say
    "COMPLETED": "completed",
    "OFF-STUDY": "completed",
    "STUDY COMPLETED": "completed",
    "DEATH": "died",
    "DIED": "died",
    "DECEASED": "died",
    "LOST TO FOLLOW-UP": "lost_to_follow_up",
    "LOST TO FOLLOW UP": "lost_to_follow_up",
    "LOST_TO_FOLLOW_UP": "lost_to_follow_up",
    "WITHDRAWN": "withdrawn",
    "WITHDRAWAL BY SUBJECT": "withdrawn",
    "WITHDRAWAL BY PARENT/GUARDIAN": "withdrawn",
    "WITHDRAWN CONSENT": "withdrawn",
    "ADVERSE EVENT": "withdrawn",
    "PHYSICIAN DECISION": "withdrawn",
    "PROGRESSIVE DISEASE": "withdrawn",
    "PROTOCOL DEVIATION": "withdrawn",
    "SPONSOR DECISION": "withdrawn",
    "STUDY TERMINATED BY SPONSOR": "withdrawn",
    "NON-COMPLIANCE WITH STUDY DRUG": "withdrawn",
    "LACK OF EFFICACY": "withdrawn",
    "PREGNANCY": "withdrawn",
    "OTHER": "withdrawn",
    "ON-STUDY": "on_study",
    "ON STUDY": "on_study",
    "ON_STUDY": "on_study",
    "ON-STUDY-INTERVENTION": "on_study",
    "ON-STUDY-OBSERVATION": "on_study",
    "FOLLOW-UP": "on_study",
}
"""A disposition that ends participation early for any other reason (adverse event, physician decision...) is a
withdrawal: the reason keeps the sender's words."""


def subject_status_of(text: str | None) -> SubjectStudyStatus | None:
    """The study status a disposition word means; None for an unknown word (the caller says where)."""
    if text is None:
        return None
    return SUBJECT_STATUS_WORDS.get(" ".join(text.strip().upper().replace("_", " ").split())) or (
        SUBJECT_STATUS_WORDS.get(text.strip().upper())
    )


def subject_status_from_fields(fields: Mapping[str, str]) -> SubjectStatusData:
    said = (fields.get("status") or "").strip()
    status = subject_status_of(said)
    if status is None:
        known = "completed, withdrawn, lost to follow-up, death (or a CDISC DSDECOD term)"
        raise FieldError("status", f"unknown subject status {said!r}: expected {known}")
    effective = _full_date("effective_on", fields.get("effective_on"), required=False)
    reason = (fields.get("reason") or "").strip() or (said if said.upper() not in (status.upper(),) else None)
    return SubjectStatusData(status=status, effective_on=effective, reason=reason[:1000] if reason else None)
