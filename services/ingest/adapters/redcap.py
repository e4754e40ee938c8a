"""Pure: REDCap's Data Entry Trigger notice, and the flat JSON records pulled through its API, to canonical events.

The DET says only *which* record changed (form-encoded, project_id as a string, no values, no signature);
the values come from the API pull and map through the project's field map, one instrument at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from services.ingest.adapters.fields import FieldError
from services.ingest.adapters.forms import Place, map_instance
from services.ingest.adapters.records import Outcome
from services.ingest.normalise import InvalidBody
from services.ingest.sources import SourceConfig

MAX_FIELD = 100
"""The width of the trigger's columns; REDCap's own limits are lower, so a longer value is not REDCap's."""
REDCAP_COLUMNS = frozenset(
    {"redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance", "redcap_data_access_group"}
)


@dataclass(frozen=True)
class DetNotice:
    project_id: str
    record: str
    instrument: str
    event: str | None
    repeat_instance: str | None
    redcap_url: str | None


def parse_det(body: bytes, *, project_id: str) -> DetNotice:
    """The trigger's form fields; a notice for another project is refused (allow-list by project id)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBody("not UTF-8", [{"loc": (), "msg": "the body must be UTF-8 form data"}]) from exc
    form = dict(parse_qsl(text, keep_blank_values=True))
    missing = [name for name in ("project_id", "record", "instrument") if not form.get(name, "").strip()]
    if missing:
        raise InvalidBody(
            "missing fields", [{"loc": (name,), "msg": "required DET field is missing"} for name in missing]
        )
    if form["project_id"].strip() != project_id:
        raise InvalidBody(
            "wrong project",
            [{"loc": ("project_id",), "msg": f"this source accepts triggers of REDCap project {project_id} only"}],
        )
    too_long = [name for name in ("record", "instrument", "redcap_event_name") if len(form.get(name, "")) > MAX_FIELD]
    if too_long:
        raise InvalidBody(
            "field too long", [{"loc": (name,), "msg": f"at most {MAX_FIELD} characters"} for name in too_long]
        )
    return DetNotice(
        project_id=project_id,
        record=form["record"].strip(),
        instrument=form["instrument"].strip(),
        event=form.get("redcap_event_name") or None,
        repeat_instance=form.get("redcap_repeat_instance") or None,
        redcap_url=form.get("redcap_url") or None,
    )


def map_records(rows: Sequence[Mapping[str, Any]], *, source: SourceConfig, study: str) -> Outcome:
    """Flat export rows (`type=flat`, raw values): one row per record, event and repeat instance.

    Each row and instrument maps on its own: one the map cannot read (a typo in a date) lands in
    `outcome.errors`, naming the record, event and instrument, and never holds back the others.
    """
    outcome = Outcome()
    for index, row in enumerate(rows):
        values = {str(k): "" if v is None else str(v) for k, v in row.items()}
        if not values:
            continue
        record_field = next(iter(values))
        subject = values[record_field].strip()
        event = values.get("redcap_event_name") or "record"
        if not subject:
            outcome.errors.append(_error(index, "", event, "", record_field, "the record id is empty"))
            continue
        repeat = values.get("redcap_repeat_instrument") or ""
        instance = values.get("redcap_repeat_instance") or "1"
        site = values.get("redcap_data_access_group") or source.default_site
        for instrument, mapping in source.mapping.forms.items():
            if repeat and instrument != repeat:
                continue
            names = set(mapping.items) | set(mapping.analytes)
            if not repeat and not any(values.get(name, "").strip() for name in names):
                continue
            place = Place(study, site, subject[:200], f"{event}/{instrument}[{instance}]")
            try:
                map_instance(
                    {k: v for k, v in values.items() if k not in REDCAP_COLUMNS},
                    mapping=mapping,
                    place=place,
                    source=source,
                    outcome=outcome,
                    baseline=event in source.mapping.baseline_events,
                )
            except FieldError as exc:
                outcome.errors.append(_error(index, subject, event, instrument, exc.field, str(exc)))
    return outcome


def _error(index: int, record: str, event: str, instrument: str, field: str, message: str) -> dict[str, Any]:
    return {
        "loc": (index, instrument, field) if instrument else (index, field),
        "msg": message,
        "record": record,
        "event": event,
        "instrument": instrument,
    }
