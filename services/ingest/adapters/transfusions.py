"""Pure: transfusions and protocol samples from what EDC formats carry (SDTM PR/CM/BE, FHIR Procedure/Specimen,
forms), to the canonical `transfusion` and `sample` events.

No format has a transfusion record of its own. What they carry, and what is read:
- the product, as HL7 v2 table 0426 codes (http://terminology.hl7.org/CodeSystem/v2-0426: PC*, PLT*, FFP, CRYO,
  RWB/WBA), SNOMED CT 431069006 "Packed red blood cells (product)", or words (PRTRT "PLATELET TRANSFUSION",
  CMTRT "PACKED RED BLOOD CELLS", Procedure.code.text "Transfusion of red cells"): platelets and red cells by
  name; plasma, cryoprecipitate, granulocytes, whole blood and a transfusion that names no product are `other`;
- a text that names no blood product and no transfusion is not a transfusion (the record is ignored, and said so).
A transfusion given on a date without a time is placed at the end of that day (the cautious reading: the
transfusion-free period that a response needs starts as late as the record allows), and flagged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services.ingest.adapters import normalise_values as nv
from services.ingest.adapters.fields import FieldError
from shared.events import SampleData, TransfusionData, TransfusionProduct

V2_BLOOD_PRODUCT = "http://terminology.hl7.org/CodeSystem/v2-0426"
V2_PRODUCTS: Mapping[str, TransfusionProduct] = {
    "PC": "red_cells",
    "PCA": "red_cells",
    "PCNEO": "red_cells",
    "PCW": "red_cells",
    "PLT": "platelets",
    "PLTNEO": "platelets",
    "PLTP": "platelets",
    "PLTPH": "platelets",
    "PLTPHLR": "platelets",
    "FFP": "other",
    "FFPTH": "other",
    "CRYO": "other",
    "CRYOP": "other",
    "RWB": "other",
    "WBA": "other",
}
SNOMED = "http://snomed.info/sct"
SNOMED_PRODUCTS: Mapping[str, TransfusionProduct] = {"431069006": "red_cells"}
"""Packed red blood cells (product). Other SNOMED procedure codes are read by their display text."""
PLATELETS = re.compile(r"platelet|thrombocyte|\bplts?\b")
RED_CELLS = re.compile(r"red (blood )?cell|\bp?rbcs?\b|packed (red )?cells|erythrocyte|\blprbc\b")
OTHER_PRODUCT = re.compile(r"plasma|\bffp\b|cryo|granulocyte|whole blood|blood product|blood component")
TRANSFUSION = re.compile(r"transfus")
NOT_A_TRANSFUSION = re.compile(r"reaction|count|donation|plasma exchange|plasmapheresis|plasma-?lyte|albumin")
"""Texts that mention a product without giving one: a transfusion reaction, a platelet count, a donation, an
exchange, a crystalloid or a plasma-derived drug."""


def product_from_text(*texts: str | None) -> TransfusionProduct | None:
    """The blood product a transfusion text names; `other` for a transfusion of no named product; None when the
    text describes no transfusion."""
    words = " ".join(t for t in texts if t).casefold().replace("_", " ")
    if not words.strip() or NOT_A_TRANSFUSION.search(words):
        return None
    if PLATELETS.search(words):
        return "platelets"
    if RED_CELLS.search(words):
        return "red_cells"
    if OTHER_PRODUCT.search(words) or TRANSFUSION.search(words):
        return "other"
    return None


def product_from_codes(codings: Iterable[tuple[str, str]]) -> TransfusionProduct | None:
    """The product of (system, code) pairs from HL7 v2-0426 or SNOMED CT products; None if none is known."""
    for system, code in codings:
        system = system.rstrip("/")
        if system == V2_BLOOD_PRODUCT and code.upper() in V2_PRODUCTS:
            return V2_PRODUCTS[code.upper()]
        if system == SNOMED and code in SNOMED_PRODUCTS:
            return SNOMED_PRODUCTS[code]
    return None


def _amount(field: str, text: str | None) -> Decimal | None:
    if text is None or not text.strip():
        return None
    try:
        return Decimal(text.strip().removesuffix(".0"))
    except InvalidOperation as exc:
        raise FieldError(field, f"not a number: {text[:40]!r}") from exc


def administered_at(text: str | None, *, zone: ZoneInfo, field: str = "administered_at") -> datetime:
    flags: list[str] = []
    try:
        moment = nv.moment(text, zone=zone, flags=flags, field=field)
    except nv.UnreadableValue as exc:
        raise FieldError(field, str(exc)) from exc
    if moment is None:
        raise FieldError(field, "a transfusion needs its date (and time)")
    if f"DATE_ONLY:{field}" in flags:
        day = moment.astimezone(zone).date()
        return datetime.combine(day, time(23, 59, 59), tzinfo=zone).astimezone(UTC)
    return moment


def transfusion_from_fields(
    fields: Mapping[str, str],
    *,
    transfusion_id: str,
    product: TransfusionProduct,
    zone: ZoneInfo,
    raw: Mapping[str, str],
) -> TransfusionData:
    """`fields`: administered_at, units, volume_ml (as text); the product already classified by the caller."""
    try:
        return TransfusionData(
            transfusion_id=transfusion_id[:200],
            product=product,
            administered_at=administered_at(fields.get("administered_at"), zone=zone),
            units=_amount("units", fields.get("units")),
            volume_ml=_amount("volume_ml", fields.get("volume_ml")),
            raw=dict(raw) or None,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "transfusion"
        raise FieldError(field, error["msg"]) from exc


def dose_fields(dose: str | None, unit: str | None) -> dict[str, str]:
    """An amount with its unit (PRDOSE/PRDOSU, CMDOSE/CMDOSU, Procedure quantity) as units or millilitres."""
    if not dose or not dose.strip():
        return {}
    said = (unit or "").strip().casefold()
    if said in {"ml", "milliliter", "millilitre", "mls"}:
        return {"volume_ml": dose}
    if said in {"l", "liter", "litre"}:
        try:
            return {"volume_ml": str(Decimal(dose) * 1000)}
        except InvalidOperation as exc:
            raise FieldError("volume_ml", f"not a number: {dose[:40]!r}") from exc
    if said in {"unit", "units", "u", "bag", "bags", "pack", "packs", "{unit}", "{bag}", ""}:
        return {"units": dose}
    return {}


def sample_from_fields(
    fields: Mapping[str, str], *, sample_id: str, zone: ZoneInfo, default_kind: str | None = None
) -> SampleData:
    """`fields`: collected_at, kind (the protocol's sample schedule, e.g. immunology), visit."""
    flags: list[str] = []
    try:
        collected = nv.moment(fields.get("collected_at"), zone=zone, flags=flags, field="collected_at")
    except nv.UnreadableValue as exc:
        raise FieldError("collected_at", str(exc)) from exc
    if collected is None:
        raise FieldError("collected_at", "a sample needs its collection date-time")
    kind = (fields.get("kind") or default_kind or "").strip().casefold()
    if not kind:
        raise FieldError(
            "kind", "a sample needs its kind (e.g. immunology), as the protocol's sample schedule names it"
        )
    visit = (fields.get("visit") or "").strip() or None
    return SampleData(
        sample_id=sample_id[:200], kind=kind[:80], collected_at=collected, visit=visit[:80] if visit else None
    )
