"""Pure: what the formats carry for infusion day and visit AE reviews, as canonical fields.

- AE onset time: see `onset_time.py`.
- Vital signs: FHIR vital-signs Observations by LOINC (8310-5 body temperature, 8480-6/8462-4 systolic and
  diastolic BP, also as components of the 85354-9 BP panel, 8867-4 heart rate, 59408-5/2708-6 SpO2, 9279-1
  respiratory rate) and SDTM VS rows by VSTESTCD (TEMP, SYSBP, DIABP, PULSE/HR, RESP, OXYSAT), each one
  canonical `vitals` record. Temperatures in Fahrenheit are converted to Celsius; the sender's text stays in `raw`.
- AE review ("any AEs?"): CDASH's AEYN question. ODM and REDCap carry it as a form item mapped to `new_aes`
  (an `ae_review` form in the source's mapping); SDTM has no such record (AEYN is not submitted: a backfill
  cannot prove a review); FHIR has no standard code, so Sentinel reads an Observation coded
  `urn:sentinel:codes|ae-review` with valueBoolean (any new AEs) and effectiveDateTime (assessed at).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from services.ingest.adapters import normalise_values as nv
from services.ingest.adapters.fields import FieldError, StatusName, record_status
from services.ingest.adapters.records import Outcome, make_record
from services.ingest.sources import SourceConfig
from shared.events import AeReviewData, InboundType, VitalsData, VitalSignName

SENTINEL_CODES = "urn:sentinel:codes"
AE_REVIEW_CODE = "ae-review"
LOINC_VITALS: dict[str, VitalSignName] = {
    "8310-5": "temperature_c",
    "8480-6": "systolic_bp",
    "8462-4": "diastolic_bp",
    "8867-4": "heart_rate",
    "59408-5": "spo2",
    "2708-6": "spo2",
    "9279-1": "respiratory_rate",
}
VS_TESTS: dict[str, VitalSignName] = {
    "TEMP": "temperature_c",
    "SYSBP": "systolic_bp",
    "DIABP": "diastolic_bp",
    "PULSE": "heart_rate",
    "HR": "heart_rate",
    "RESP": "respiratory_rate",
    "OXYSAT": "spo2",
    "SPO2": "spo2",
}
BP_PANELS = {"85354-9", "55284-4"}
"""Blood pressure panels: their components, or (a common quirk) a valueString "120/80"."""
BP_TEXT = re.compile(r"^\s*(\d{2,3}(?:\.\d+)?)\s*/\s*(\d{2,3}(?:\.\d+)?)\s*(?:mm\s*\[?hg\]?)?\s*$", re.IGNORECASE)
FAHRENHEIT = {"[degf]", "degf", "f", "°f", "deg f"}
CELSIUS = {"cel", "c", "°c", "degc", "deg c", "[degc]"}


def celsius(value: Decimal, unit: str | None, *, field: str) -> Decimal:
    """Body temperature in degrees Celsius: Fahrenheit converted (to 0.01 C), Celsius or no unit as given."""
    spelled = (unit or "").strip().lower()
    if spelled in FAHRENHEIT:
        return ((value - 32) * 5 / 9).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if spelled and spelled not in CELSIUS:
        raise FieldError(field, f"unknown temperature unit {unit!r}: send Cel or [degF]")
    return value


def number(value: Any, *, field: str) -> Decimal:
    try:
        return Decimal(str(value).strip().replace(",", "."))
    except InvalidOperation as exc:
        raise FieldError(field, f"not a number: {value!r}") from exc


def fhir_vital_signs(resource: Mapping[str, Any]) -> tuple[dict[str, Decimal], dict[str, str]]:
    """The signs a vital-signs Observation carries (its own value, or the BP panel's components), and raw text."""
    signs: dict[str, Decimal] = {}
    raw: dict[str, str] = {}
    parts = [resource, *[c for c in resource.get("component") or [] if isinstance(c, dict)]]
    for index, part in enumerate(parts):
        codes = [c for c in (part.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
        sign = next((LOINC_VITALS[str(c.get("code"))] for c in codes if str(c.get("code")) in LOINC_VITALS), None)
        quantity = part.get("valueQuantity")
        if sign is None or not isinstance(quantity, dict) or quantity.get("value") is None:
            continue
        field = "valueQuantity" if index == 0 else f"component/{index - 1}/valueQuantity"
        value = number(quantity["value"], field=field)
        unit = quantity.get("code") or quantity.get("unit")
        raw[sign] = f"{quantity['value']} {unit or ''}".strip()
        signs[sign] = celsius(value, unit, field=field) if sign == "temperature_c" else value
    panel = {str(c.get("code")) for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)}
    text = resource.get("valueString")
    pressure = BP_TEXT.match(text) if isinstance(text, str) and panel & BP_PANELS and not signs else None
    if pressure is not None:
        signs["systolic_bp"], signs["diastolic_bp"] = Decimal(pressure[1]), Decimal(pressure[2])
        raw["blood_pressure"] = str(text)
    return signs, raw


def vs_sign(row: Mapping[str, str]) -> tuple[VitalSignName, Decimal] | None:
    """One SDTM VS row: (sign, value in canonical units), or None for a test Sentinel does not monitor."""
    test = (row.get("VSTESTCD") or "").strip().upper()
    sign = VS_TESTS.get(test)
    if sign is None:
        return None
    standard = (row.get("VSSTRESN") or "").strip()
    text, unit = (standard, row.get("VSSTRESU")) if standard else (row.get("VSORRES") or "", row.get("VSORRESU"))
    if not text.strip():
        raise FieldError("VSORRES", "the VS row has no result (VSORRES or VSSTRESN)")
    column = "VSSTRESN" if standard else "VSORRES"
    value = number(text, field=column)
    return sign, celsius(value, unit, field=column) if sign == "temperature_c" else value


def is_ae_review(resource: Mapping[str, Any]) -> bool:
    codes = [c for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
    return any(c.get("system") == SENTINEL_CODES and c.get("code") == AE_REVIEW_CODE for c in codes)


def is_vital_signs(resource: Mapping[str, Any]) -> bool:
    categories = resource.get("category") or []
    codes = {str(c.get("code", "")).lower() for cat in categories for c in (cat.get("coding") or [])}
    return "vital-signs" in codes


# --- records ---------------------------------------------------------------------------------------------------


def vitals_from_signs(
    signs: Mapping[str, Decimal], *, vitals_id: str, measured_at: str | None, zone: ZoneInfo, raw: Mapping[str, str]
) -> VitalsData:
    flags: list[str] = []
    try:
        when = nv.moment(measured_at, zone=zone, flags=flags, field="measured_at")
    except nv.UnreadableValue as exc:
        raise FieldError("measured_at", str(exc)) from exc
    if when is None:
        raise FieldError("measured_at", "vital signs need the time they were measured")
    if not signs:
        raise FieldError("value", "no vital sign Sentinel monitors (temperature, BP, heart/respiratory rate, SpO2)")
    try:
        return VitalsData.model_validate(
            {"vitals_id": vitals_id[:200], "measured_at": when, **signs, "raw": {k: str(v) for k, v in raw.items()}}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise FieldError(str(error["loc"][0]) if error["loc"] else "value", error["msg"]) from exc


def vitals_from_fields(fields: Mapping[str, str], *, vitals_id: str, zone: ZoneInfo) -> VitalsData:
    """An ODM/REDCap vitals form: one item per sign, an optional temperature unit item (Celsius by default)."""
    signs: dict[str, Decimal] = {}
    for sign in ("temperature_c", "systolic_bp", "diastolic_bp", "heart_rate", "respiratory_rate", "spo2"):
        text = (fields.get(sign) or "").strip()
        if text:
            value = number(text, field=sign)
            signs[sign] = (
                celsius(value, fields.get("temperature_unit"), field=sign) if sign == "temperature_c" else value
            )
    data = vitals_from_signs(signs, vitals_id=vitals_id, measured_at=fields.get("measured_at"), zone=zone, raw=fields)
    dose = (fields.get("dose_id") or "").strip()
    return data.model_copy(update={"dose_id": dose[:200]}) if dose else data


def ae_review_from_fields(
    fields: Mapping[str, str], *, review_id: str, zone: ZoneInfo, yes_no: Mapping[str, bool]
) -> AeReviewData:
    """CDASH AEYN: "N" (no AEs) is the review that found none new; "Y" says new AEs were reported on AE forms."""
    answer = (fields.get("new_aes") or "").strip()
    try:
        new_aes = nv.yes_no(answer, yes_no)
    except nv.UnreadableValue as exc:
        raise FieldError("new_aes", f"AEYN must be yes or no, got {answer!r}") from exc
    if new_aes is None:
        raise FieldError("new_aes", "the AE review needs its answer (AEYN: any adverse events?)")
    flags: list[str] = []
    try:
        assessed = nv.moment(fields.get("assessed_at"), zone=zone, flags=flags, field="assessed_at")
    except nv.UnreadableValue as exc:
        raise FieldError("assessed_at", str(exc)) from exc
    if assessed is None:
        raise FieldError("assessed_at", "the AE review needs the date it was done")
    visit = (fields.get("visit") or "").strip()[:80] or None
    return AeReviewData(review_id=review_id[:200], assessed_at=assessed, visit=visit, new_aes=new_aes, raw=dict(fields))


def fhir_ae_review(resource: Mapping[str, Any], *, review_id: str, zone: ZoneInfo) -> AeReviewData:
    answer = resource.get("valueBoolean")
    if not isinstance(answer, bool):
        raise FieldError("valueBoolean", "an ae-review Observation needs valueBoolean (any new adverse events?)")
    when = resource.get("effectiveDateTime")
    fields = {"assessed_at": str(when) if when else "", "new_aes": "Y" if answer else "N"}
    encounter = resource.get("encounter")
    if isinstance(encounter, dict) and encounter.get("display"):
        fields["visit"] = str(encounter["display"])
    return ae_review_from_fields(fields, review_id=review_id, zone=zone, yes_no={})


def fhir_observation(
    resource: Mapping[str, Any],
    *,
    resource_id: str,
    study: str,
    subject: str,
    source: SourceConfig,
    outcome: Outcome,
    delivery: str | None,
    source_version: str | None,
) -> None:
    """A vital-signs Observation becomes a `vitals` record; an ae-review Observation an `ae_review` record."""
    review = is_ae_review(resource)
    kind = "ae_review" if review else "vitals"
    key = f"{study}:{subject}:{kind}:{resource_id}"
    common: dict[str, Any] = {"study": study, "site": source.default_site, "subject": subject, "record_key": key}
    status = str(resource.get("status") or "final")
    if status in {"entered-in-error", "cancelled"}:
        word: StatusName = "entered_in_error" if status == "entered-in-error" else "deleted"
        retracted = record_status(kind, resource_id, word, f"FHIR Observation status {status}")  # type: ignore[arg-type]
        outcome.records.append(make_record(type_=InboundType.STATUS, data=retracted, **common, delivery_id=delivery))
        return
    if status == "registered":
        outcome.ignored.append(f"Observation/{resource_id}: status registered (no result yet)")
        return
    if review:
        data: BaseModel = fhir_ae_review(resource, review_id=resource_id, zone=source.zone)
        type_ = InboundType.AE_REVIEW
    else:
        signs, raw = fhir_vital_signs(resource)
        if not signs:  # a vital sign Sentinel does not monitor (height, weight, BMI ...)
            outcome.ignored.append(f"Observation/{resource_id}: vital signs with nothing Sentinel monitors")
            return
        when = resource.get("effectiveDateTime") or resource.get("effectiveInstant")
        data = vitals_from_signs(
            signs, vitals_id=resource_id, measured_at=str(when) if when else None, zone=source.zone, raw=raw
        )
        type_ = InboundType.VITALS
    outcome.records.append(
        make_record(type_=type_, data=data, **common, delivery_id=delivery, source_version=source_version)
    )
