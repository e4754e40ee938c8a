"""Pure: one filled-in form instance (ODM item group, REDCap instrument row) to canonical events via its map.

ODM and REDCap differ in how they carry a form, not in what a form means; both hand this module the
instance's values by item name, and it applies the source's `FieldMap`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.ingest.adapters.fields import (
    FieldError,
    StatusName,
    ae_from_fields,
    ae_version,
    dose_from_fields,
    enrollment_from_fields,
    lab_from_fields,
    record_status,
    status_of,
    subject_status_from_fields,
)
from services.ingest.adapters.infusion_day import ae_review_from_fields, vitals_from_fields
from services.ingest.adapters.records import Outcome, make_record, version_text
from services.ingest.adapters.transfusions import product_from_text, sample_from_fields, transfusion_from_fields
from services.ingest.sources import FieldMap, SourceConfig
from shared.events import InboundType, SubjectStatusData, TransfusionData, TransfusionProduct


@dataclass(frozen=True)
class Place:
    """Where a form instance sits: trial, site, subject and a stable path (event/form/group with repeat keys)."""

    study: str
    site: str
    subject: str
    path: str


def map_instance(
    values: Mapping[str, str],
    *,
    mapping: FieldMap,
    place: Place,
    source: SourceConfig,
    outcome: Outcome,
    baseline: bool = False,
    status: StatusName | None = None,
    source_version: str | None = None,
    units: Mapping[str, str] | None = None,
    entered_at: datetime | None = None,
) -> None:
    """Add the events of one form instance to `outcome`; a form with nothing mapped filled in adds nothing.

    `entered_at`: when the site last modified the instance, where the EDC's audit says (an AE's entry time)."""
    baseline = baseline or mapping.baseline
    if mapping.type == "lab" and mapping.analytes:
        _analytes(values, mapping, place, source, outcome, baseline, status, source_version, units or {})
        return
    fields = {mapping.items[name]: value for name, value in values.items() if name in mapping.items}
    if mapping.type != "subject_status":  # there 'status' is the disposition itself, not a record status
        status = status or status_of(fields.pop("status", None))
    if not any(value.strip() for value in fields.values()) and status is None:
        return
    raw = {name: value for name, value in values.items() if value != ""}
    record_id = (fields.get("id") or "").strip() or place.path
    key = f"{place.study}:{place.subject}:{mapping.type}:{record_id}"
    common: dict[str, Any] = {"study": place.study, "site": place.site, "subject": place.subject, "record_key": key}
    if status is not None:
        kind = mapping.type
        if kind == "subject_status":
            _disposition_taken_back(status, place, common, outcome)
            return
        retracted = record_status(
            kind,
            record_id,
            status,
            f"record status at {place.path}",
            changed_at=entered_at,
            replaced_by=fields.get("replaced_by") if kind == "ae" else None,
        )
        outcome.records.append(make_record(type_=InboundType.STATUS, data=retracted, **common))
        return
    if mapping.type == "ae":
        ae = ae_from_fields(fields, ae_id=record_id, raw=raw, codelists=source.mapping.codelists, zone=source.zone)
        version_given = ae_version(fields.get("version")) is not None
        outcome.records.append(
            make_record(
                type_=InboundType.AE,
                data=ae,
                **common,
                source_version=version_text(ae.version) if version_given else source_version,
                assign_version=not version_given,
                entered_at=entered_at,
            )
        )
    elif mapping.type == "lab":
        lab = lab_from_fields(fields, result_id=record_id, raw=raw, zone=source.zone, baseline=baseline)
        if lab is not None:
            outcome.records.append(
                make_record(type_=InboundType.LAB, data=lab, **common, source_version=source_version)
            )
    elif mapping.type == "dose":
        dose = dose_from_fields(fields, dose_id=record_id, zone=source.zone)
        outcome.records.append(make_record(type_=InboundType.DOSE, data=dose, **common, source_version=source_version))
    elif mapping.type == "vitals":
        vitals = vitals_from_fields(fields, vitals_id=record_id, zone=source.zone)
        outcome.records.append(
            make_record(type_=InboundType.VITALS, data=vitals, **common, source_version=source_version)
        )
    elif mapping.type == "ae_review":
        yes_no = source.mapping.codelists.yes_no
        review = ae_review_from_fields(fields, review_id=record_id, zone=source.zone, yes_no=yes_no)
        outcome.records.append(
            make_record(type_=InboundType.AE_REVIEW, data=review, **common, source_version=source_version)
        )
    elif mapping.type == "transfusion":
        outcome.records.append(
            make_record(
                type_=InboundType.TRANSFUSION,
                data=_transfusion(fields, mapping, record_id, raw, source),
                **common,
                source_version=source_version,
            )
        )
    elif mapping.type == "sample":
        sample = sample_from_fields(fields, sample_id=record_id, zone=source.zone, default_kind=mapping.sample_kind)
        outcome.records.append(
            make_record(type_=InboundType.SAMPLE, data=sample, **common, source_version=source_version)
        )
    elif mapping.type == "subject_status":
        # a disposition form (DS): withdrawal, loss to follow-up, death or completion, never a deletion
        common["record_key"] = f"{place.study}:{place.subject}:subject_status"
        data = subject_status_from_fields(fields)
        outcome.records.append(
            make_record(type_=InboundType.SUBJECT_STATUS, data=data, **common, source_version=source_version)
        )
    else:
        common["record_key"] = f"{place.study}:{place.subject}:enrollment:{place.subject}"
        outcome.records.append(make_record(type_=InboundType.ENROLLMENT, data=enrollment_from_fields(fields), **common))


PRODUCT_WORDS: dict[str, TransfusionProduct] = {"red_cells": "red_cells", "platelets": "platelets", "other": "other"}


def _transfusion(
    fields: Mapping[str, str], mapping: FieldMap, record_id: str, raw: Mapping[str, str], source: SourceConfig
) -> TransfusionData:
    """A transfusion form: the product as our word, or words the classifier reads ("Platelets, apheresis")."""
    said = (fields.get("product") or "").strip()
    product = PRODUCT_WORDS.get(said.casefold().replace(" ", "_")) or product_from_text(said) or mapping.product
    if product is None:
        raise FieldError("product", f"not a blood product: {said[:60]!r} (red cells, platelets, plasma...)")
    return transfusion_from_fields(fields, transfusion_id=record_id, product=product, zone=source.zone, raw=raw)


def _disposition_taken_back(status: StatusName, place: Place, common: dict[str, Any], outcome: Outcome) -> None:
    """A disposition form deleted or entered in error at the site: the subject is on study again."""
    if status == "restored":
        outcome.ignored.append(f"{place.path}: a restored disposition form; re-send its values to restore the status")
        return
    data = SubjectStatusData(status="on_study", reason=f"disposition at {place.path} {status.replace('_', ' ')}")
    common["record_key"] = f"{place.study}:{place.subject}:subject_status"
    outcome.records.append(make_record(type_=InboundType.SUBJECT_STATUS, data=data, **common))


def _analytes(
    values: Mapping[str, str],
    mapping: FieldMap,
    place: Place,
    source: SourceConfig,
    outcome: Outcome,
    baseline: bool,
    status: StatusName | None,
    source_version: str | None,
    units: Mapping[str, str],
) -> None:
    """Wide lab forms: one item per analyte, units fixed in the map, ranges in items or in free text."""
    shared = {mapping.items[name]: value for name, value in values.items() if name in mapping.items}
    for name, analyte in mapping.analytes.items():
        value = (values.get(name) or "").strip()
        if not value:
            continue
        result_id = f"{place.path}/{name}"
        key = f"{place.study}:{place.subject}:lab:{result_id}"
        common: dict[str, Any] = {"study": place.study, "site": place.site, "subject": place.subject, "record_key": key}
        if status is not None:
            retracted = record_status("lab", result_id, status, f"record status at {place.path}")
            outcome.records.append(make_record(type_=InboundType.STATUS, data=retracted, **common))
            continue
        flags: list[str] = []
        unit = analyte.unit or units.get(name)
        if unit is None:
            flags.append("NO_UNIT")
        fields = {**shared, "test": analyte.test, "value": value}
        raw = {name: value}
        if unit:
            fields["unit"] = unit
        for bound, item, fixed in (("lln", analyte.lln_item, analyte.lln), ("uln", analyte.uln_item, analyte.uln)):
            if item and (values.get(item) or "").strip():
                fields[bound] = raw[item] = values[item]
            elif fixed is not None:
                fields[bound] = str(fixed)
        if analyte.range_item and (values.get(analyte.range_item) or "").strip():
            fields["range"] = raw[analyte.range_item] = values[analyte.range_item]
        for item, target in mapping.items.items():
            if target == "collected_at" and item in values:
                raw[item] = values[item]
        try:
            lab = lab_from_fields(
                fields, result_id=result_id, raw=raw, zone=source.zone, baseline=baseline, flags=flags
            )
        except FieldError as exc:
            raise FieldError(name if exc.field == "value" else exc.field, str(exc)) from exc
        if lab is not None:
            outcome.records.append(
                make_record(type_=InboundType.LAB, data=lab, **common, source_version=source_version)
            )
