"""Pure: CDISC ODM 1.3 ClinicalData snapshots (form level) to canonical events, through the source's item map.

Parsed with defusedxml (no DTDs, no entity expansion). Rave (`mdsol:`) and OpenClinica (`OpenClinica:`)
extension attributes are read where useful (subject labels, record status) and otherwise ignored; a UTF-8
BOM (Rave Web Services sends one) is tolerated. Rave's Clinical Audit Records stream is item-level and
stateful: it is refused here and belongs in a connector that posts form snapshots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from services.ingest.adapters.fields import FieldError, StatusName, status_of
from services.ingest.adapters.forms import Place, map_instance
from services.ingest.adapters.records import Outcome, version_text
from services.ingest.normalise import InvalidBody
from services.ingest.sources import FieldMap, SourceConfig

BOM = b"\xef\xbb\xbf"


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _attr(element: Element, name: str) -> str | None:
    """An attribute by local name, whatever its namespace (ODM core, mdsol:, OpenClinica:)."""
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _children(element: Element, name: str) -> Iterator[Element]:
    return (child for child in element if _local(child.tag) == name)


def parse_odm(body: bytes, *, source: SourceConfig) -> Outcome:
    try:
        root = SafeET.fromstring(body.removeprefix(BOM))
    except DefusedXmlException as exc:
        raise InvalidBody("unsafe XML", [{"loc": (), "msg": f"XML with DTDs or entities is refused: {exc}"}]) from exc
    except (ParseError, ValueError) as exc:
        raise InvalidBody("not XML", [{"loc": (), "msg": f"not well-formed XML: {exc}"}]) from exc
    if _local(root.tag) != "ODM":
        raise InvalidBody("not ODM", [{"loc": (), "msg": "the document element must be ODM"}])
    outcome = Outcome()
    errors: list[dict[str, Any]] = []
    for clinical in _children(root, "ClinicalData"):
        if _attr(clinical, "AuditSubCategoryName") is not None:
            raise InvalidBody(
                "audit stream",
                [
                    {
                        "loc": ("ClinicalData",),
                        "msg": "Rave Clinical Audit Records are item-level; post form snapshots (RWS datasets)",
                    }
                ],
            )
        study = source.trial or clinical.get("StudyOID") or ""
        if not study:
            raise InvalidBody("no study", [{"loc": ("ClinicalData", "StudyOID"), "msg": "StudyOID is required"}])
        for subject in _children(clinical, "SubjectData"):
            _subject(subject, study, source, outcome, errors)
    if errors:
        raise InvalidBody("invalid ODM", errors)
    return outcome


def _subject(
    element: Element, study: str, source: SourceConfig, outcome: Outcome, errors: list[dict[str, Any]]
) -> None:
    key = element.get("SubjectKey") or ""
    label = _attr(element, "StudySubjectID") or _attr(element, "SubjectName")
    subject = (label if source.mapping.subject == "label" and label else key).strip()[:200]
    if not subject:
        errors.append({"loc": ("SubjectData", "SubjectKey"), "msg": "SubjectKey is required"})
        return
    site_ref = next(_children(element, "SiteRef"), None)
    site = (site_ref.get("LocationOID") if site_ref is not None else None) or source.default_site
    subject_status = _status(element)
    for event in _children(element, "StudyEventData"):
        event_oid = event.get("StudyEventOID") or ""
        event_path = f"{event_oid}[{event.get('StudyEventRepeatKey') or '1'}]"
        event_status = subject_status or _status(event)
        for form in _children(event, "FormData"):
            form_oid = form.get("FormOID") or ""
            mapping = source.mapping.forms.get(form_oid)
            path = f"{event_path}/{form_oid}[{form.get('FormRepeatKey') or '1'}]"
            if mapping is None:
                outcome.ignored.append(f"{subject} {path}: form not mapped")
                continue
            try:
                _form(
                    form,
                    mapping,
                    Place(study, site, subject, path),
                    event_oid,
                    event_status or _status(form),
                    source,
                    outcome,
                )
            except FieldError as exc:
                errors.append({"loc": ("SubjectData", subject, path, exc.field), "msg": str(exc)})


def _status(element: Element) -> StatusName | None:
    if (element.get("TransactionType") or "").lower() == "remove":
        return "deleted"
    return status_of(_attr(element, "Status"))


def _items(group: Element) -> dict[str, tuple[str, Element]]:
    found: dict[str, tuple[str, Element]] = {}
    for item in group:
        name = _local(item.tag)
        if not name.startswith("ItemData"):
            continue
        oid = item.get("ItemOID") or ""
        value = item.get("Value") if name == "ItemData" else (item.text or "")
        if item.get("IsNull", "").lower() == "yes":
            value = ""
        found[oid] = (value or "", item)
    return found


def _latest_audit(elements: list[Element], source: SourceConfig) -> str | None:
    moment = _latest_audit_time(elements, source)
    return version_text(moment.isoformat()) if moment is not None else None


def _latest_audit_time(elements: list[Element], source: SourceConfig) -> datetime | None:
    """The latest `AuditRecord/DateTimeStamp` under the elements (UTC): when the site last changed them."""
    stamps = []
    for element in elements:
        for stamp in element.iter():
            if _local(stamp.tag) == "DateTimeStamp" and stamp.text:
                try:
                    moment = datetime.fromisoformat(stamp.text.strip().replace("Z", "+00:00"))
                except ValueError:
                    continue
                stamps.append((moment if moment.tzinfo else moment.replace(tzinfo=source.zone)).astimezone(UTC))
    return max(stamps) if stamps else None


def _units(found: dict[str, tuple[str, Element]]) -> dict[str, str]:
    units = {}
    for oid, (_, element) in found.items():
        ref = next(_children(element, "MeasurementUnitRef"), None)
        if ref is not None and ref.get("MeasurementUnitOID"):
            units[oid] = ref.get("MeasurementUnitOID") or ""
    return units


def _form(
    form: Element,
    mapping: FieldMap,
    place: Place,
    event_oid: str,
    status: StatusName | None,
    source: SourceConfig,
    outcome: Outcome,
) -> None:
    groups = list(_children(form, "ItemGroupData"))
    if mapping.type == "ae":
        for group in groups:  # AE log lines: one AE per item group (repeat key)
            found = _items(group)
            map_instance(
                {oid: value for oid, (value, _) in found.items()},
                mapping=mapping,
                place=_line(place, group),
                source=source,
                outcome=outcome,
                status=status or _status(group),
                source_version=_latest_audit([group], source),
                entered_at=_latest_audit_time([group], source),  # the site's entry time of this AE version
            )
        return
    baseline = event_oid in source.mapping.baseline_events
    lines = _repeated(groups)
    single = [group for group in groups if group not in lines]
    values, units, status = _merged(single, status)
    if not lines or any(values.get(name, "").strip() for name in mapping.analytes):
        # one instance for the form: its non-repeating groups together (the draw date sits beside the analytes);
        # on a log form only when analytes sit outside the lines, which are mapped one by one below
        map_instance(
            values,
            mapping=mapping,
            place=place,
            source=source,
            outcome=outcome,
            baseline=baseline,
            status=status,
            source_version=_latest_audit(single, source),
            units=units,
        )
    context = {oid: value for oid, value in values.items() if oid not in mapping.analytes}
    for group in lines:  # log forms (lab or dose lines): one instance per line, sharing the form's other groups
        found = _items(group)
        map_instance(
            {**context, **{oid: value for oid, (value, _) in found.items()}},
            mapping=mapping,
            place=_line(place, group, lines),
            source=source,
            outcome=outcome,
            baseline=baseline,
            status=status or _status(group),
            source_version=_latest_audit([*single, group], source),
            units={**units, **_units(found)},
        )


def _repeated(groups: list[Element]) -> list[Element]:
    """The lines of a log: item groups whose OID occurs more than once, or with a repeat key other than 1.

    OpenClinica puts ItemGroupRepeatKey="1" on every group, so a key alone does not make a group repeat.
    """
    counts = Counter(group.get("ItemGroupOID") for group in groups)
    repeating = {
        group.get("ItemGroupOID")
        for group in groups
        if counts[group.get("ItemGroupOID")] > 1 or (group.get("ItemGroupRepeatKey") or "1") != "1"
    }
    return [group for group in groups if group.get("ItemGroupOID") in repeating]


def _merged(
    groups: list[Element], status: StatusName | None
) -> tuple[dict[str, str], dict[str, str], StatusName | None]:
    values: dict[str, str] = {}
    units: dict[str, str] = {}
    for group in groups:
        found = _items(group)
        values.update({oid: value for oid, (value, _) in found.items()})
        units.update(_units(found))
        status = status or _status(group)
    return values, units, status


def _line(place: Place, group: Element, lines: list[Element] | None = None) -> Place:
    """A log line's place: the form's path plus the group and its repeat key.

    A lab or dose log keeps line 1 at the form's own path while only one group OID repeats, so the line
    published when the log had a single line keeps its record id when a second line arrives.
    """
    oid = group.get("ItemGroupOID") or ""
    key = group.get("ItemGroupRepeatKey") or "1"
    if lines is not None and key == "1" and len({line.get("ItemGroupOID") for line in lines}) == 1:
        return place
    return Place(place.study, place.site, place.subject, f"{place.path}/{oid}[{key}]")
