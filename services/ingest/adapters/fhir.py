"""Pure: HL7 FHIR R4 AdverseEvent and laboratory Observation (single resources or Bundles) to canonical events.

AdverseEvent includes the HL7 AE Clinical Research R4 backport extensions (ae-grade, seriousness-criteria,
suspect-entity causality, resolve-date, status). Both the core R4 seriousness codes (`Serious`) and the THO 5.x
ones (`serious`) are read. Observations keep LOINC, UCUM, comparators and reference ranges; a wrong LOINC system
URI (`https://loinc.org`) or a non-UCUM unit (`K/mcL`) is accepted and flagged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from services.ingest.adapters import normalise_values as nv
from services.ingest.adapters.fields import (
    FieldError,
    StatusName,
    dose_from_fields,
    lab_from_fields,
    record_status,
    seriousness_flags,
    subject_status_of,
)
from services.ingest.adapters.infusion_day import fhir_observation, is_ae_review, is_vital_signs
from services.ingest.adapters.onset_time import onset_instant
from services.ingest.adapters.records import Outcome, make_record, version_text
from services.ingest.adapters.transfusions import (
    dose_fields,
    product_from_codes,
    product_from_text,
    sample_from_fields,
    transfusion_from_fields,
)
from services.ingest.normalise import MAX_VERSION, InvalidBody, load_json
from services.ingest.sources import SourceConfig
from shared.events import (
    AeData,
    InboundType,
    RecordStatusData,
    Relatedness,
    SeriousnessCriteria,
    SubjectStatusData,
)

MAX_ENTRIES = 1000
BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SERIOUSNESS_CODES: dict[str, str | None] = {
    "serious": None,
    "seriousresultsindeath": "death",
    "seriousislifethreatening": "life_threatening",
    "seriousresultsinhospitalization": "hospitalization",
    "seriousresultsindisability": "disability",
    "seriousisbirthdefect": "congenital_anomaly",
    "seriousrequirespreventimpairment": "medically_important",
}
CRITERION_CODES = {
    "C48275": "death",
    "C84266": "life_threatening",
    "C83052": "hospitalization",
    "C11338": "disability",
    "C83117": "congenital_anomaly",
    "C82521": "medically_important",
    "C201939": "medically_important",
}
LOINC_TO_TEST = {
    "751-8": "NEUT",
    "26499-4": "NEUT",
    "753-4": "NEUT",
    "777-3": "PLAT",
    "26515-7": "PLAT",
    "718-7": "HGB",
    "6690-2": "WBC",
    "26464-8": "WBC",
    "731-0": "LYM",
    "26474-7": "LYM",
    "1742-6": "ALT",
    "1920-8": "AST",
    "1975-2": "BILI",
    "2160-0": "CREAT",
    "704-7": "BASO",
}
"""Many-to-one and extendable per source; percentage codes (770-8 neutrophils/100 leukocytes) are left out on
purpose, so a percentage is never graded as an absolute count."""
RELATEDNESS_ORDER = list(Relatedness)


def parse_fhir(body: bytes, *, source: SourceConfig) -> Outcome:
    document = load_json(body, parse_float=Decimal)
    if not isinstance(document, dict):
        raise InvalidBody("not a resource", [{"loc": (), "msg": "expected a FHIR resource (a JSON object)"}])
    outcome = Outcome()
    errors: list[dict[str, Any]] = []
    kind = _text(document.get("resourceType"))
    if kind == "Bundle":
        entries = document.get("entry") or []
        if not isinstance(entries, list):
            raise InvalidBody("bad bundle", [{"loc": ("entry",), "msg": "Bundle.entry must be a list"}])
        if len(entries) > MAX_ENTRIES:
            raise InvalidBody("too many", [{"loc": ("entry",), "msg": f"at most {MAX_ENTRIES} entries per Bundle"}])
        for index, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                outcome.ignored.append(f"entry/{index}: no resource (send deletions as status entered-in-error)")
                continue
            _resource(resource, ("entry", index, "resource"), source, outcome, errors)
    elif kind in {
        "AdverseEvent",
        "Observation",
        "ResearchSubject",
        "MedicationAdministration",
        "Procedure",
        "Specimen",
    }:
        _resource(document, (), source, outcome, errors)
    else:
        raise InvalidBody(
            "unsupported resource",
            [
                {
                    "loc": ("resourceType",),
                    "msg": "expected AdverseEvent, Observation, ResearchSubject, MedicationAdministration, Procedure,"
                    " Specimen or a Bundle of them",
                }
            ],
        )
    if errors:
        raise InvalidBody("invalid resource", errors)
    return outcome


def _resource(
    resource: dict[str, Any],
    loc: tuple[str | int, ...],
    source: SourceConfig,
    outcome: Outcome,
    errors: list[dict[str, Any]],
) -> None:
    kind = resource.get("resourceType")
    try:
        if kind == "AdverseEvent":
            _adverse_event(resource, source, outcome)
        elif kind == "Observation":
            _observation(resource, source, outcome)
        elif kind == "ResearchSubject":
            _research_subject(resource, source, outcome)
        elif kind == "MedicationAdministration":
            _medication_administration(resource, source, outcome)
        elif kind == "Procedure":
            _procedure(resource, source, outcome)
        elif kind == "Specimen":
            _specimen(resource, source, outcome)
        else:
            outcome.ignored.append(
                f"{kind}/{resource.get('id', '?')}: not an AdverseEvent, Observation or ResearchSubject"
            )
    except FieldError as exc:
        errors.append({"loc": (*loc, exc.field), "msg": str(exc)})
    except (TypeError, AttributeError, ValueError) as exc:
        # FHIR JSON is open-ended: an element of the wrong JSON type (a list where an object belongs) is the
        # sender's error, answered 422 with the resource's location, never a 500
        errors.append({"loc": loc, "msg": f"malformed {kind} resource: {type(exc).__name__}: {exc}"[:300]})


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding") or []
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def _extensions(element: Mapping[str, Any], name: str, key: str = "extension") -> list[dict[str, Any]]:
    found = element.get(key) or []
    if not isinstance(found, list):
        return []
    return [e for e in found if isinstance(e, dict) and str(e.get("url", "")).endswith(name)]


def _sub(extension: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    for child in extension.get("extension") or []:
        if isinstance(child, dict) and child.get("url") == name:
            return child
    return None


def reference_id(reference: str) -> str:
    """The id in a FHIR reference `[base/]Type/id[/_history/version]`; other forms (`urn:uuid:...`) as given."""
    parts = reference.strip().rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-1]


def _identity(resource: Mapping[str, Any], source: SourceConfig) -> tuple[str, str, str]:
    resource_id = _text(resource.get("id"))
    if not resource_id:
        raise FieldError("id", "the resource needs its id (stable across versions)")
    subject = _obj(resource.get("subject"))
    reference = _text(subject.get("reference")) or ""
    subject_id = reference_id(reference) if reference else _text(subject.get("display"))
    if not subject_id:
        raise FieldError("subject", "the resource needs subject.reference (Patient/<id>)")
    study = source.trial
    if study is None:
        studies = resource.get("study") or []
        first = _obj(studies[0]) if isinstance(studies, list) and studies else {}
        study = reference_id(_text(first.get("reference")) or "") or None
    if study is None:
        raise FieldError("study", "the source has no trial configured and the resource names no study")
    return resource_id, subject_id[:200], study


def _version(resource: Mapping[str, Any]) -> tuple[int | None, str | None]:
    meta = _obj(resource.get("meta"))
    version_id = (_text(meta.get("versionId")) or "").strip()
    if version_id.isascii() and version_id.isdigit() and (len(version_id) > 10 or int(version_id) > MAX_VERSION):
        raise FieldError("meta", f"meta.versionId must be at most {MAX_VERSION}")
    number = nv.small_int(version_id, digits=10)
    if number is not None and number >= 1:
        return number, version_text(number)
    updated = _text(meta.get("lastUpdated"))
    if updated:
        try:
            moment = datetime.fromisoformat(updated.replace("Z", "+00:00"))
        except ValueError:
            return None, None
        if moment.tzinfo is not None:
            return None, version_text(moment.astimezone(UTC).isoformat())
    return None, None


def _last_updated(resource: Mapping[str, Any]) -> datetime | None:
    """`meta.lastUpdated`: when the server stored this version (the site's entry, not our receipt); None without a
    zone or unreadable (never a guess)."""
    updated = _text(_obj(resource.get("meta")).get("lastUpdated"))
    if not updated:
        return None
    try:
        moment = datetime.fromisoformat(updated.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _delivery(kind: str, resource_id: str, version: int | None) -> str | None:
    """The resource version is the delivery id; without one the record is identified by its content."""
    return f"{kind}/{resource_id}/_history/{version}" if version else None


RESEARCH_SUBJECT_IGNORED = {
    "candidate",
    "eligible",
    "ineligible",
    "not-registered",
    "pending-on-study",
    "potential-candidate",
    "screening",
}
"""ResearchSubject statuses before enrolment: nothing for the 3+3 (the enrolment event enrols)."""


def _research_subject(resource: dict[str, Any], source: SourceConfig, outcome: Outcome) -> None:
    """R4 ResearchSubject.status (withdrawn, off-study, on-study...) as the subject's study status; R5's
    progress[].subjectState (e.g. deceased, lost-to-follow-up) wins when present, latest last."""
    resource_id = _text(resource.get("id"))
    if not resource_id:
        raise FieldError("id", "the resource needs its id (stable across versions)")
    individual = _obj(resource.get("individual") or resource.get("subject"))
    reference = _text(individual.get("reference")) or ""
    subject = reference_id(reference) if reference else _text(individual.get("display"))
    if not subject:
        raise FieldError("individual", "the ResearchSubject needs individual.reference (Patient/<id>)")
    study = source.trial or reference_id(_text(_obj(resource.get("study")).get("reference")) or "") or None
    if study is None:
        raise FieldError("study", "the source has no trial configured and the resource names no study")
    said = _text(resource.get("status")) or ""
    reason = None
    for progress in resource.get("progress") or []:
        state = _obj(_obj(progress).get("subjectState"))
        for coding in _codings(state):
            code = _text(coding.get("code"))
            if code and subject_status_of(code.replace("-", " ")) is not None:
                said, reason = code, _text(state.get("text")) or _text(coding.get("display"))
    if said in RESEARCH_SUBJECT_IGNORED:
        outcome.ignored.append(f"ResearchSubject/{resource_id}: status {said!r} is before enrolment")
        return
    status = subject_status_of(said.replace("-", " ")) or subject_status_of(said)
    if status is None:
        raise FieldError("status", f"unknown ResearchSubject status {said!r}")
    period = _obj(resource.get("period"))
    end = _text(period.get("end"))
    effective = date.fromisoformat(end[:10]) if end and len(end) >= 10 else None
    data = SubjectStatusData(status=status, effective_on=effective, reason=(reason or said)[:1000])
    number, source_version = _version(resource)
    outcome.records.append(
        make_record(
            type_=InboundType.SUBJECT_STATUS,
            data=data,
            study=study,
            site=source.default_site,
            subject=subject[:200],
            record_key=f"{study}:{subject}:subject_status",
            delivery_id=_delivery("ResearchSubject", resource_id, number),
            source_version=source_version,
        )
    )


SENTINEL_EXTENSION = "https://sentinel.example/fhir/StructureDefinition/"
"""Sponsor extensions where FHIR R4 has no element: the infusion number (on the MedicationAdministration) and the
lot's release results (on the contained Medication): `release-viability` (valueDecimal, %), `release-<test>`
(valueBoolean: passed) for sterility, pathogens, mycoplasma, endotoxin, purity, tumorigenicity, identity,
`release-released` (valueBoolean: the QP's release decision)."""
CELL_UNITS = {"{cells}", "cells", "10*6.{cells}", "10^6 cells"}
CELLS_PER_KG_UNITS = {"{cells}/kg", "cells/kg", "10*6.{cells}/kg", "10^6 cells/kg"}


def _medication_administration(resource: dict[str, Any], source: SourceConfig, outcome: Outcome) -> None:
    """An infusion: effective time, dose (cells/kg or total cells), the lot (contained Medication.batch) and
    its release results (sponsor extensions on that Medication)."""
    resource_id, subject, study = _identity(resource, source)
    version, source_version = _version(resource)
    common: dict[str, Any] = {
        "study": study,
        "site": source.default_site,
        "subject": subject,
        "record_key": f"{study}:{subject}:dose:{resource_id}",
    }
    status = _text(resource.get("status")) or "completed"
    if status == "entered-in-error":
        retracted = record_status("dose", resource_id, "entered_in_error", "FHIR MedicationAdministration status")
        delivery = _delivery("MedicationAdministration-status", resource_id, version)
        outcome.records.append(make_record(type_=InboundType.STATUS, data=retracted, **common, delivery_id=delivery))
        return
    if status not in {"completed", "in-progress"}:
        outcome.ignored.append(f"MedicationAdministration/{resource_id}: status {status} (no infusion given)")
        return
    period = _obj(resource.get("effectivePeriod"))
    fields: dict[str, str] = {
        "administered_at": _text(resource.get("effectiveDateTime")) or _text(period.get("start")) or ""
    }
    for extension in resource.get("extension") or []:
        if _obj(extension).get("url") == SENTINEL_EXTENSION + "infusion-number":
            fields["number"] = str(_obj(extension).get("valueInteger", ""))
    dose = _obj(_obj(resource.get("dosage")).get("dose"))
    unit = _text(dose.get("code")) or _text(dose.get("unit")) or ""
    if dose.get("value") is not None and unit in CELLS_PER_KG_UNITS | CELL_UNITS:
        try:
            amount = Decimal(str(dose["value"])) * (1_000_000 if unit.startswith(("10*6", "10^6")) else 1)
        except InvalidOperation as exc:
            raise FieldError("dosage", f"dosage.dose.value is not a number: {dose['value']!r}"[:200]) from exc
        fields["cells_per_kg" if unit in CELLS_PER_KG_UNITS else "total_cells"] = str(amount)
    medication = _contained_medication(resource)
    if medication:
        fields["lot"] = _text(_obj(medication.get("batch")).get("lotNumber")) or ""
        for extension in medication.get("extension") or []:
            url = str(_obj(extension).get("url", ""))
            if url.startswith(SENTINEL_EXTENSION + "release-"):
                name = url.removeprefix(SENTINEL_EXTENSION + "release-")
                value = _obj(extension).get("valueBoolean", _obj(extension).get("valueDecimal"))
                target = "release_viability_percent" if name == "viability" else f"release_{name}"
                fields[target] = "" if value is None else str(value)
    data = dose_from_fields(fields, dose_id=resource_id, zone=source.zone)
    delivery = _delivery("MedicationAdministration", resource_id, version)
    outcome.records.append(
        make_record(type_=InboundType.DOSE, data=data, **common, delivery_id=delivery, source_version=source_version)
    )


def _contained_medication(resource: Mapping[str, Any]) -> dict[str, Any]:
    reference = (_text(_obj(resource.get("medicationReference")).get("reference")) or "").removeprefix("#")
    for contained in resource.get("contained") or []:
        item = _obj(contained)
        if item.get("resourceType") == "Medication" and (not reference or item.get("id") == reference):
            return item
    return {}


def _adverse_event(resource: dict[str, Any], source: SourceConfig, outcome: Outcome) -> None:
    resource_id, subject, study = _identity(resource, source)
    if resource.get("actuality") == "potential":
        outcome.ignored.append(f"AdverseEvent/{resource_id}: actuality=potential (no subject was harmed)")
        return
    version, source_version = _version(resource)
    key = f"{study}:{subject}:ae:{resource_id}"
    common: dict[str, Any] = {"study": study, "site": source.default_site, "subject": subject, "record_key": key}
    # The backport's status modifierExtension, or R5's own `status` element (a modifier too: never read past it)
    words = [_text(status.get("valueCode")) for status in _extensions(resource, "/status", "modifierExtension")]
    for word in [*words, _text(resource.get("status"))]:
        if word == "entered-in-error":
            reason = "FHIR status entered-in-error"
            data = record_status("ae", resource_id, "entered_in_error", reason, changed_at=_last_updated(resource))
            outcome.records.append(
                make_record(
                    type_=InboundType.STATUS,
                    data=data,
                    **common,
                    delivery_id=_delivery("AE-status", resource_id, version),
                )
            )
            return
    ae = _ae_data(resource, resource_id, version, source)
    outcome.records.append(
        make_record(
            type_=InboundType.AE,
            data=ae,
            **common,
            delivery_id=_delivery("AdverseEvent", resource_id, version),
            source_version=source_version,
            assign_version=version is None,
            entered_at=_last_updated(resource),
        )
    )


def _ae_data(resource: dict[str, Any], resource_id: str, version: int | None, source: SourceConfig) -> AeData:
    flags: list[str] = []
    raw: dict[str, str] = {}
    lists = source.mapping.codelists
    event = _obj(resource.get("event"))
    codings = _codings(event)
    term = _text(event.get("text")) or next((_text(c.get("display")) for c in codings if c.get("display")), None)
    if not term:
        raise FieldError("event", "the AdverseEvent needs event.text or event.coding.display (the AE term)")
    meddra: str | None = next(
        (_text(c.get("code")) for c in codings if "meddra" in str(c.get("system", "")).lower() and c.get("code")), None
    )
    if meddra and not (meddra.isascii() and meddra.isdigit() and len(meddra) == 8):
        flags.append("UNMAPPED_VALUE:meddra_code")
        meddra = None

    serious, ticked = _seriousness(resource.get("seriousness"), raw, flags)
    for extension in _extensions(resource, "/seriousness-criteria"):
        code_ext, present_ext = _sub(extension, "criterionCode"), _sub(extension, "criterionPresent")
        criterion_code, criterion = _criterion(_obj(code_ext).get("valueCodeableConcept"))
        present = (present_ext or {}).get("valueBoolean")
        raw[f"seriousness-criteria:{criterion_code}"] = str(present).lower()
        if criterion is None:
            flags.append("UNMAPPED_VALUE:seriousness_criteria")
        elif present is True:
            ticked[criterion] = True
        elif present is False:
            ticked.setdefault(criterion, False)
    criteria = SeriousnessCriteria(**ticked) if ticked else None

    grade = _grade(resource, raw, flags, lists.grade)
    relatedness = _relatedness(resource, raw, flags, lists.relatedness)
    outcome_code = _outcome(resource.get("outcome"), raw, flags, lists.outcome)
    onset_text = _text(resource.get("date")) or _text(resource.get("occurrenceDateTime"))
    end_text = next((_text(e.get("valueDateTime")) for e in _extensions(resource, "/resolve-date")), None)
    onset, end = _date(onset_text, "onset", raw, flags), _date(end_text, "end", raw, flags)
    onset_at = onset_instant(onset_text, zone=source.zone, flags=flags) if onset and len(onset) == 10 else None
    detected = _text(resource.get("detected"))
    if detected:
        raw["detected"] = detected
    try:
        awareness = nv.moment(detected, zone=source.zone, flags=flags, field="awareness_at")
    except nv.UnreadableValue:
        flags.append("UNMAPPED_VALUE:awareness_at")
        awareness = None
    severity = next((_text(c.get("code")) for c in _codings(resource.get("severity"))), None)
    if severity:
        raw["severity"] = severity
    flags.extend(seriousness_flags(serious, criteria, outcome_code, grade))
    if onset is not None and len(onset) < 10:
        flags.append("PARTIAL_ONSET")
    return AeData(
        ae_id=resource_id[:200],
        version=version or 1,
        term=term[:500],
        meddra_code=meddra,
        grade=grade,
        serious=serious,
        seriousness=criteria,
        relatedness=relatedness,
        onset=onset,
        onset_at=onset_at,
        end=end,
        outcome=outcome_code,
        awareness_at=awareness,
        raw=raw,
        flags=flags,
    )


def _spellings(concept: Any) -> list[str]:
    """Every coding's code and display, in order: a sender may put the code we know in any of them."""
    return [t for c in _codings(concept) for t in (_text(c.get("code")), _text(c.get("display"))) if t]


def _seriousness_word(text: str) -> tuple[bool, str | None] | None:
    """(serious, criterion) for R4 (`Serious`, `SeriousResultsInDeath`), THO 5.x (`serious`) or yes/no."""
    folded = text.replace("-", "").replace("_", "").replace(" ", "").lower()
    if folded == "nonserious":
        return False, None
    if folded in SERIOUSNESS_CODES:
        return True, SERIOUSNESS_CODES[folded]
    try:
        answer = nv.serious(text)
    except nv.UnreadableValue:
        return None
    return (answer, None) if answer is not None else None


def _said(concept: dict[str, Any]) -> str:
    """What the sender wrote, for `raw`: each coding's code (or display), then the text."""
    spelled = [_text(c.get("code")) or _text(c.get("display")) or "" for c in _codings(concept)]
    text = _text(concept.get("text"))
    return " | ".join([*spelled, *([text] if text and text not in spelled else [])])


def _seriousness(concept: Any, raw: dict[str, str], flags: list[str]) -> tuple[bool | None, dict[str, bool]]:
    """Every coding and the text; serious wins over non-serious (never downgrade); unread values are flagged."""
    ticked: dict[str, bool] = {}
    if not isinstance(concept, dict) or not _said(concept):
        return None, ticked
    raw["seriousness"] = _said(concept)
    texts = [*_spellings(concept), *[t for t in [_text(concept.get("text"))] if t]]
    words = [w for w in (_seriousness_word(t) for t in texts) if w is not None]
    if not words:
        flags.append("UNMAPPED_VALUE:serious")
        if not any(mentions_death(t) for t in texts):
            return None, ticked
        words = [(True, "death")]  # free text speaking of a death: read conservatively, flagged for a person
    for _, criterion in words:
        if criterion:
            ticked[criterion] = True
    return any(answer for answer, _ in words), ticked


DEATH_WORDS = re.compile(r"\b(FATAL|DEATH|DIED|DEAD)\b", re.IGNORECASE)
NEGATION = re.compile(r"\b(NO|NOT|NON|WITHOUT)\b", re.IGNORECASE)


def mentions_death(text: str) -> bool:
    """Free text that speaks of a death (and does not negate it): read as fatal, flagged, never ignored."""
    return bool(DEATH_WORDS.search(text)) and not NEGATION.search(text)


def _criterion(concept: Any) -> tuple[str | None, str | None]:
    """(the code as sent, our criterion) from any coding: NCI codes of the backport IG, or R4 seriousness codes."""
    codes = [_text(c.get("code")) for c in _codings(concept)]
    for code in codes:
        if code in CRITERION_CODES:
            return code, CRITERION_CODES[code]
        word = _seriousness_word(code or "")
        if word is not None and word[1] is not None:
            return code, word[1]
    return next((c for c in codes if c), None), None


def _outcome(concept: Any, raw: dict[str, str], flags: list[str], overrides: Mapping[str, str]) -> str | None:
    """Every coding and the text; FATAL wins over any other reading (never downgrade); unread values are flagged."""
    if not isinstance(concept, dict) or not _said(concept):
        return None
    raw["outcome"] = _said(concept)
    texts = [*_spellings(concept), *[t for t in [_text(concept.get("text"))] if t]]
    found: list[str] = []
    for text in texts:
        try:
            value = nv.outcome(text, overrides)
        except nv.UnreadableValue:
            continue
        if value is not None:
            found.append(value)
    if found:
        return "FATAL" if "FATAL" in found else found[0]
    flags.append("UNMAPPED_VALUE:outcome")
    return "FATAL" if any(mentions_death(t) for t in texts) else None


def _date(text: str | None, field: str, raw: dict[str, str], flags: list[str]) -> str | None:
    if not text:
        return None
    raw[field] = text
    try:
        return nv.partial_date(text)
    except nv.UnreadableValue:
        flags.append(f"UNMAPPED_VALUE:{field}")
        return None


def _grade(
    resource: Mapping[str, Any], raw: dict[str, str], flags: list[str], overrides: Mapping[str, int]
) -> int | None:
    for extension in _extensions(resource, "/ae-grade"):
        concept = extension.get("valueCodeableConcept") or {}
        candidates = [_text(c.get("code")) for c in _codings(concept)] + [_text(concept.get("text"))]
        raw["grade"] = " | ".join(c for c in candidates if c)
        for candidate in candidates:
            try:
                found = nv.grade(candidate, overrides)
            except nv.UnreadableValue:
                continue
            if found is not None:
                return found
        flags.append("UNMAPPED_VALUE:grade")
    for extension in _extensions(resource, "#Grade"):  # MSK CRIT: a CTCAE grade as valueInteger
        value = extension.get("valueInteger")
        raw["grade"] = str(value)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
            return value
        flags.append("UNMAPPED_VALUE:grade")
    return None


def _relatedness(
    resource: Mapping[str, Any], raw: dict[str, str], flags: list[str], overrides: Mapping[str, str]
) -> Relatedness | None:
    """The strongest causality stated for any suspect entity: a combination therapy is as related as its worst.

    An assessment none of whose codings we can read (or a WHO-UMC `Unassessable-Unclassifiable`) is flagged even
    when another entity's is read: its unknown degree might be the strongest.
    """
    concepts: list[Any] = []
    for extension in _extensions(resource, "/suspect-entity"):
        causality = _sub(extension, "causality") or {}
        related = _sub(causality, "entityRelatedness") or {}
        concepts.append(related.get("valueCodeableConcept"))
    for entity in resource.get("suspectEntity") or []:
        for causality in (entity.get("causality") or []) if isinstance(entity, dict) else []:
            concepts.append(causality.get("assessment") if isinstance(causality, dict) else None)
    stated = [[*_spellings(c), *[t for t in [_text(_obj(c).get("text"))] if t]] for c in concepts]
    stated = [texts for texts in stated if texts]
    if not stated:
        return None
    raw["relatedness"] = " | ".join(t for texts in stated for t in texts)
    found: list[Relatedness] = []
    for texts in stated:
        read = [value for value in (_read_relatedness(t, overrides) for t in texts) if value is not None]
        if not read:
            flags.append("UNMAPPED_VALUE:relatedness")
        found.extend(read)
    return max(found, key=RELATEDNESS_ORDER.index) if found else None


def _read_relatedness(text: str, overrides: Mapping[str, str]) -> Relatedness | None:
    try:
        return nv.relatedness(text, overrides)
    except nv.UnreadableValue:
        return None


def _observation(resource: dict[str, Any], source: SourceConfig, outcome: Outcome) -> None:
    resource_id, subject, study = _identity(resource, source)
    if is_vital_signs(resource) or is_ae_review(resource):  # infusion-day vitals, visit AE reviews
        version, source_version = _version(resource)
        fhir_observation(
            resource,
            resource_id=resource_id,
            study=study,
            subject=subject,
            source=source,
            outcome=outcome,
            delivery=_delivery("Observation", resource_id, version),
            source_version=source_version,
        )
        return
    categories = resource.get("category") or []
    category_codes = {str(c.get("code", "")).lower() for cat in categories for c in _codings(cat)}
    if category_codes and "laboratory" not in category_codes:
        outcome.ignored.append(
            f"Observation/{resource_id}: not a laboratory result ({', '.join(sorted(category_codes))})"
        )
        return
    version, source_version = _version(resource)
    key = f"{study}:{subject}:lab:{resource_id}"
    common: dict[str, Any] = {"study": study, "site": source.default_site, "subject": subject, "record_key": key}
    status = _text(resource.get("status")) or "final"
    if status in {"entered-in-error", "cancelled"}:
        word: StatusName = "entered_in_error" if status == "entered-in-error" else "deleted"
        retracted = record_status("lab", resource_id, word, f"FHIR Observation status {status}")
        delivery = _delivery("Observation-status", resource_id, version)
        outcome.records.append(make_record(type_=InboundType.STATUS, data=retracted, **common, delivery_id=delivery))
        return
    if status == "registered":
        outcome.ignored.append(f"Observation/{resource_id}: status registered (no result yet)")
        return
    flags: list[str] = []
    if status == "preliminary":
        flags.append("PRELIMINARY_RESULT")
    elif status in {"amended", "corrected"}:
        flags.append("CORRECTED_RESULT")
    fields, raw = _lab_fields(resource, flags, source)
    if "value" not in fields:
        if resource.get("dataAbsentReason"):
            outcome.ignored.append(f"Observation/{resource_id}: no value (dataAbsentReason)")
            return
        raise FieldError("valueQuantity", "the Observation has no value (valueQuantity or valueString)")
    data = lab_from_fields(fields, result_id=resource_id, raw=raw, zone=source.zone, baseline=False, flags=flags)
    if data is None:
        raise FieldError("valueQuantity", "the Observation has an empty value")
    delivery = _delivery("Observation", resource_id, version)
    outcome.records.append(
        make_record(type_=InboundType.LAB, data=data, **common, delivery_id=delivery, source_version=source_version)
    )


def _lab_fields(
    resource: Mapping[str, Any], flags: list[str], source: SourceConfig
) -> tuple[dict[str, str], dict[str, str]]:
    fields: dict[str, str] = {}
    raw: dict[str, str] = {"status": str(resource.get("status", ""))}
    loinc_map = {**LOINC_TO_TEST, **source.mapping.loinc}
    for coding in _codings(resource.get("code")):
        system = str(coding.get("system", "")).rstrip("/")
        code = _text(coding.get("code")) or ""
        if system.lower().endswith("loinc.org") and code:
            raw["loinc"] = f"{coding.get('system')}|{code}"
            if system != LOINC:
                flags.append("LOINC_SYSTEM_URI")
            fields["loinc"] = code
            if code in loinc_map:
                fields["test"] = loinc_map[code]
            break
    if "loinc" not in fields:
        raise FieldError("code", "the Observation needs a LOINC code (code.coding with system http://loinc.org)")
    quantity = resource.get("valueQuantity")
    value_unit: str | None = None
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        number = quantity["value"]
        comparator = _text(quantity.get("comparator")) or ""
        fields["value"] = f"{comparator}{number}"
        raw["value"] = fields["value"]
        value_unit = _unit(quantity, flags, raw, "unit")
    elif _text(resource.get("valueString")):
        fields["value"] = str(resource["valueString"])
        raw["value"] = fields["value"]
    if value_unit:
        fields["unit"] = value_unit
    ranges = resource.get("referenceRange") or []
    first = ranges[0] if isinstance(ranges, list) and ranges and isinstance(ranges[0], dict) else {}
    range_units = set()
    for bound, name in (("low", "lln"), ("high", "uln")):
        limit = first.get(bound)
        if isinstance(limit, dict) and limit.get("value") is not None:
            fields[name] = str(limit["value"])
            raw[name] = fields[name]
            range_unit = _unit(limit, [], raw, f"{name}_unit")
            if range_unit:
                range_units.add(nv.unit(range_unit))
    if _text(first.get("text")):
        raw["range"] = str(first["text"])
        fields["range"] = str(first["text"])
    if range_units and value_unit and range_units != {nv.unit(value_unit)}:
        flags.append("RANGE_UNIT_MISMATCH")
        fields.pop("lln", None)
        fields.pop("uln", None)
        fields.pop("range", None)
    when = _text(resource.get("effectiveDateTime")) or _text(resource.get("effectiveInstant"))
    period = resource.get("effectivePeriod")
    if when is None and isinstance(period, dict):
        when = _text(period.get("start"))
    if when is None and _text(resource.get("issued")):
        when = str(resource["issued"])
        flags.append("COLLECTED_AT_FROM_ISSUED")
    if when:
        fields["collected_at"] = when
        raw["effective"] = when
    for coding in (c for concept in resource.get("interpretation") or [] for c in _codings(concept)):
        raw["interpretation"] = _text(coding.get("code")) or ""
    return fields, raw


def _unit(quantity: Mapping[str, Any], flags: list[str], raw: dict[str, str], name: str) -> str | None:
    system, code, unit = quantity.get("system"), _text(quantity.get("code")), _text(quantity.get("unit"))
    if unit or code:
        raw[name] = unit or code or ""
    if system == UCUM and code:
        return code
    if unit:
        flags.append("NON_UCUM_UNIT")
    return unit or code


PROCEDURE_NOT_GIVEN = {"not-done", "preparation"}
"""Procedure statuses in which no product went in; `in-progress`, `stopped`, `on-hold` and `completed` count."""


def _procedure(resource: dict[str, Any], source: SourceConfig, outcome: Outcome) -> None:
    """A transfusion Procedure: the product from usedCode/code (HL7 v2-0426, SNOMED CT products) or their text."""
    resource_id, subject, study = _identity(resource, source)
    version, source_version = _version(resource)
    key = f"{study}:{subject}:transfusion:{resource_id}"
    common: dict[str, Any] = {"study": study, "site": source.default_site, "subject": subject, "record_key": key}
    concepts = [_obj(resource.get("code")), *(_obj(c) for c in resource.get("usedCode") or [])]
    codings = [c for concept in concepts for c in _codings(concept)]
    texts = [_text(concept.get("text")) for concept in concepts] + [_text(c.get("display")) for c in codings]
    product = product_from_codes(
        (_text(c.get("system")) or "", _text(c.get("code")) or "") for c in codings
    ) or product_from_text(*texts)
    if product is None:
        outcome.ignored.append(f"Procedure/{resource_id}: not a transfusion ({next((t for t in texts if t), '')!r})")
        return
    status = _text(resource.get("status")) or "completed"
    if status == "entered-in-error":
        retracted = RecordStatusData(
            record_type="transfusion", record_id=resource_id[:200], status="entered_in_error", reason="FHIR status"
        )
        delivery = _delivery("Procedure-status", resource_id, version)
        outcome.records.append(make_record(type_=InboundType.STATUS, data=retracted, **common, delivery_id=delivery))
        return
    if status in PROCEDURE_NOT_GIVEN:
        outcome.ignored.append(f"Procedure/{resource_id}: status {status} (nothing transfused)")
        return
    period = _obj(resource.get("performedPeriod"))
    when = _text(resource.get("performedDateTime")) or _text(period.get("start"))
    fields = {"administered_at": when} if when else {}
    for extension in _extensions(resource, "quantity"):  # no core element; an extension or usedReference carries it
        quantity = _obj(extension.get("valueQuantity"))
        fields.update(dose_fields(_text(quantity.get("value")), _text(quantity.get("code") or quantity.get("unit"))))
    raw = {"code": " | ".join(t for t in texts if t)[:200], "status": status}
    try:
        data = transfusion_from_fields(fields, transfusion_id=resource_id, product=product, zone=source.zone, raw=raw)
    except FieldError as exc:
        raise FieldError("performedDateTime" if exc.field == "administered_at" else exc.field, str(exc)) from exc
    delivery = _delivery("Procedure", resource_id, version)
    outcome.records.append(
        make_record(
            type_=InboundType.TRANSFUSION, data=data, **common, delivery_id=delivery, source_version=source_version
        )
    )


SPECIMEN_TAKEN_BACK = {"entered-in-error": "entered_in_error", "unsatisfactory": "deleted"}
"""An unsatisfactory specimen is not the sample the protocol needs: it no longer counts (the site recollects)."""


def _specimen(resource: dict[str, Any], source: SourceConfig, outcome: Outcome) -> None:
    """A collected Specimen: its kind is Specimen.type (text or display), e.g. "Immunology sample"."""
    resource_id, subject, study = _identity(resource, source)
    version, source_version = _version(resource)
    key = f"{study}:{subject}:sample:{resource_id}"
    common: dict[str, Any] = {"study": study, "site": source.default_site, "subject": subject, "record_key": key}
    status = _text(resource.get("status")) or "available"
    if status in SPECIMEN_TAKEN_BACK:
        retracted = RecordStatusData(
            record_type="sample",
            record_id=resource_id[:200],
            status="entered_in_error" if status == "entered-in-error" else "deleted",
            reason=f"FHIR Specimen status {status}",
        )
        delivery = _delivery("Specimen-status", resource_id, version)
        outcome.records.append(make_record(type_=InboundType.STATUS, data=retracted, **common, delivery_id=delivery))
        return
    collection = _obj(resource.get("collection"))
    period = _obj(collection.get("collectedPeriod"))
    when = _text(collection.get("collectedDateTime")) or _text(period.get("start"))
    kind_concept = _obj(resource.get("type"))
    kind = _text(kind_concept.get("text")) or next(
        (_text(c.get("display")) for c in _codings(kind_concept) if c.get("display")), None
    )
    fields = {k: v for k, v in {"collected_at": when, "kind": kind}.items() if v}
    try:
        data = sample_from_fields(fields, sample_id=resource_id, zone=source.zone)
    except FieldError as exc:
        where = {"collected_at": "collection", "kind": "type"}.get(exc.field, exc.field)
        raise FieldError(where, str(exc)) from exc
    delivery = _delivery("Specimen", resource_id, version)
    outcome.records.append(
        make_record(type_=InboundType.SAMPLE, data=data, **common, delivery_id=delivery, source_version=source_version)
    )
