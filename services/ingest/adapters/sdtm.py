"""Pure: SDTM AE, LB, EX, DM, DS and VS rows (JSON or CSV) to canonical events, for backfills.

Columns are SDTM names, so the mapping is fixed; the rows carry no message ids, so a row is identified by its
content: re-posting the same extract is a duplicate, a changed row (or one changed back) is a new version.
JSON numbers are kept as the sender's digits (`5.10` stays `5.10`): SDTM values are text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

from services.ingest.adapters.fields import (
    FieldError,
    ae_from_fields,
    dose_from_fields,
    enrollment_from_fields,
    lab_from_fields,
    subject_status_from_fields,
)
from services.ingest.adapters.infusion_day import vitals_from_signs, vs_sign
from services.ingest.adapters.records import Outcome, make_record
from services.ingest.adapters.transfusions import (
    dose_fields,
    product_from_text,
    sample_from_fields,
    transfusion_from_fields,
)
from services.ingest.normalise import InvalidBody, load_json
from services.ingest.sources import SourceConfig
from shared.events import InboundType

MAX_ROWS = 50_000
DOMAINS = ("AE", "LB", "EX", "DM", "DS", "VS", "PR", "CM", "BE")
AE_COLUMNS = {
    "AETERM": "term",
    "AETOXGR": "grade",
    "AESER": "serious",
    "AESDTH": "death",
    "AESLIFE": "life_threatening",
    "AESHOSP": "hospitalization",
    "AESDISAB": "disability",
    "AESCONG": "congenital_anomaly",
    "AESMIE": "medically_important",
    "AEREL": "relatedness",
    "AESTDTC": "onset",
    "AEENDTC": "end",
    "AEOUT": "outcome",
    "AESEV": "severity",
    "AEACN": "action_taken",
}
LB_COLUMNS = {
    "LBTESTCD": "test",
    "LBLOINC": "loinc",
    "LBORRES": "value",
    "LBORRESU": "unit",
    "LBORNRLO": "lln",
    "LBORNRHI": "uln",
    "LBDTC": "collected_at",
    "LBBLFL": "baseline",
}
EX_COLUMNS = {"EXSTDTC": "administered_at", "EXSEQ": "number", "EXLOT": "lot"}
# RFXSTDTC is the first exposure to the study treatment (the UC-MSC infusion), not the CAR-T infusion: the CAR-T
# date has no SDTM variable, so it comes as the sponsor's supplemental qualifier CARTDTC (SUPPDM, merged in the row).
DM_COLUMNS = {"ARMCD": "arm", "RFICDTC": "enrolled_at", "CARTDTC": "car_t_infused_on"}
DS_COLUMNS = {"DSDECOD": "status", "DSSTDTC": "effective_on", "DSTERM": "reason"}
VS_COLUMNS = {"VSDTC": "measured_at", "VSORRES": "value"}
PR_COLUMNS = {"PRSTDTC": "administered_at"}
CM_COLUMNS = {"CMSTDTC": "administered_at"}
BE_COLUMNS = {"BESTDTC": "collected_at", "BEDTC": "collected_at", "BECAT": "kind", "VISIT": "visit"}
"""PR and CM rows are transfusions when their text names a blood product or a transfusion (PRTRT/PRDECOD/PRCAT,
CMTRT/CMDECOD/CMCAT/CMSCAT); BE rows are samples when BETERM/BEDECOD is a collection (SDTMIG-PGx BE)."""
DS_MILESTONES = {"PROTOCOL MILESTONE", "OTHER EVENT"}
"""DSCAT values that are not a disposition (informed consent, randomisation): ignored, and said so."""
Row = dict[str, str]


def parse_sdtm(body: bytes, *, content_type: str, source: SourceConfig, domain: str | None = None) -> Outcome:
    rows, default_domain = _rows(body, content_type)
    domain = (domain or default_domain or "").upper() or None
    if len(rows) > MAX_ROWS:
        raise InvalidBody("too many rows", [{"loc": ("rows",), "msg": f"at most {MAX_ROWS} rows per request"}])
    outcome = Outcome()
    errors: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        row_domain = (row.get("DOMAIN") or domain or "").upper()
        try:
            _convert(row, row_domain, source, outcome)
        except FieldError as exc:
            column = _column_for(row_domain, exc.field)
            errors.append({"loc": ("rows", index, column), "msg": str(exc)})
        if len(errors) >= 50:
            break
    if errors:
        raise InvalidBody("invalid rows", errors)
    return outcome


def _rows(body: bytes, content_type: str) -> tuple[list[Row], str | None]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidBody("not UTF-8", [{"loc": (), "msg": "the body must be UTF-8"}]) from exc
    if content_type.startswith("text/csv"):
        return _csv_rows(text), None
    document = load_json(body, parse_float=str)
    domain = None
    if isinstance(document, dict):
        domain = document.get("domain") if isinstance(document.get("domain"), str) else None
        document = document.get("rows")
    if not isinstance(document, list) or not document:
        raise InvalidBody("no rows", [{"loc": ("rows",), "msg": "send a non-empty list of rows"}])
    rows: list[Row] = []
    for index, row in enumerate(document):
        if not isinstance(row, dict):
            raise InvalidBody("bad row", [{"loc": ("rows", index), "msg": "each row must be an object"}])
        rows.append({str(k).upper(): _text(v) for k, v in row.items()})
    return rows, domain


def _csv_rows(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text))
    rows: list[Row] = []
    try:
        if not reader.fieldnames:
            raise InvalidBody("empty CSV", [{"loc": (), "msg": "the CSV has no header row"}])
        for row in reader:
            rows.append({k.strip().upper(): (v or "") for k, v in row.items() if k})
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte, an unterminated quote
        where = ("rows", len(rows))
        raise InvalidBody(
            "bad CSV", [{"loc": where, "msg": f"not valid CSV at line {reader.line_num}: {exc}"}]
        ) from exc
    return rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)


def _mapped(row: Row, columns: Mapping[str, str]) -> dict[str, str]:
    return {field: row[column] for column, field in columns.items() if row.get(column, "").strip()}


def _convert(row: Row, domain: str, source: SourceConfig, outcome: Outcome) -> None:
    if domain not in DOMAINS:
        raise FieldError("DOMAIN", f"DOMAIN must be one of {', '.join(DOMAINS)}, got {domain or 'nothing'!r}")
    subject = (row.get("USUBJID") or row.get("SUBJID") or "").strip()
    if not subject:
        raise FieldError("USUBJID", "every row needs USUBJID")
    study = (row.get("STUDYID") or "").strip() or source.trial
    if not study:
        raise FieldError("STUDYID", "STUDYID is required when the source has no configured trial")
    if source.trial and study != source.trial:
        raise FieldError("STUDYID", f"this source posts for trial {source.trial!r}, not {study!r}")
    site = (row.get("SITEID") or "").strip() or source.default_site
    raw = {k: v for k, v in row.items() if v != ""}
    key = f"{study}:{subject}"
    converters: dict[str, Callable[[], None]] = {
        "AE": lambda: _ae(row, raw, source, outcome, study, site, subject, key),
        "LB": lambda: _lab(row, raw, source, outcome, study, site, subject, key),
        "EX": lambda: _dose(row, source, outcome, study, site, subject, key),
        "DM": lambda: _enrollment(row, outcome, study, site, subject, key),
        "DS": lambda: _disposition(row, outcome, study, site, subject, key),
        "VS": lambda: _vital_sign(row, raw, source, outcome, study, site, subject, key),
        "PR": lambda: _transfusion(row, raw, "PR", source, outcome, study, site, subject, key),
        "CM": lambda: _transfusion(row, raw, "CM", source, outcome, study, site, subject, key),
        "BE": lambda: _sample(row, source, outcome, study, site, subject, key),
    }
    converters[domain]()


def _vital_sign(row: Row, raw: Row, source: SourceConfig, outcome: Outcome, *ids: str) -> None:
    """One VS row is one sign: a `vitals` record of its own (safety joins signs measured together by time)."""
    _, _, subject, _ = ids
    vitals_id = f"VSSEQ-{_seq(row, 'VSSEQ')}"
    if (row.get("VSSTAT") or "").strip().upper() == "NOT DONE":
        outcome.ignored.append(f"{subject} {vitals_id}: VSSTAT=NOT DONE")
        return
    measured = vs_sign(row)
    if measured is None:
        outcome.ignored.append(f"{subject} {vitals_id}: VSTESTCD {row.get('VSTESTCD')!r} is not monitored")
        return
    sign, value = measured
    data = vitals_from_signs(
        {sign: value}, vitals_id=vitals_id, measured_at=row.get("VSDTC"), zone=source.zone, raw=raw
    )
    _append(outcome, InboundType.VITALS, data, ids, vitals_id)


def _seq(row: Row, column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise FieldError(column, f"{column} is required to identify the record")
    return value.removesuffix(".0")


def _ae(row: Row, raw: Row, source: SourceConfig, outcome: Outcome, *ids: str) -> None:
    ae_id = f"AESEQ-{_seq(row, 'AESEQ')}"
    fields = _mapped(row, AE_COLUMNS)
    code = (row.get("AELLTCD") or row.get("AEPTCD") or "").strip().removesuffix(".0")
    if code:
        fields["meddra_code"] = code
    data = ae_from_fields(fields, ae_id=ae_id, raw=raw, codelists=source.mapping.codelists, zone=source.zone)
    _append(outcome, InboundType.AE, data, ids, ae_id, assign_version=True)


def _lab(row: Row, raw: Row, source: SourceConfig, outcome: Outcome, *ids: str) -> None:
    _, _, subject, _ = ids
    result_id = f"LBSEQ-{_seq(row, 'LBSEQ')}"
    if (row.get("LBSTAT") or "").strip().upper() == "NOT DONE":
        outcome.ignored.append(f"{subject} {result_id}: LBSTAT=NOT DONE")
        return
    data = lab_from_fields(_mapped(row, LB_COLUMNS), result_id=result_id, raw=raw, zone=source.zone, baseline=False)
    if data is None:
        outcome.ignored.append(f"{subject} {result_id}: no LBORRES")
        return
    _append(outcome, InboundType.LAB, data, ids, result_id)


def _dose(row: Row, source: SourceConfig, outcome: Outcome, *ids: str) -> None:
    dose_id = f"EXSEQ-{_seq(row, 'EXSEQ')}"
    fields = _mapped(row, EX_COLUMNS)
    fields["number"] = fields.get("number", "1").removesuffix(".0")
    if (row.get("EXDOSU") or "").strip().lower().replace(" ", "") in {"cells/kg", "10^6cells/kg", "cell/kg"}:
        dose = (row.get("EXDOSE") or "").strip()
        factor = "1000000" if "10^6" in row["EXDOSU"] else "1"
        if dose:
            try:
                fields["cells_per_kg"] = str(Decimal(dose) * Decimal(factor))
            except InvalidOperation as exc:
                raise FieldError("cells_per_kg", f"EXDOSE is not a number: {dose!r}") from exc
    if (row.get("EXDOSU") or "").strip().lower() in {"cells", "10^6 cells", "10^6cells"}:
        total = (row.get("EXDOSE") or "").strip()
        if total:
            try:
                fields["total_cells"] = str(Decimal(total) * (1_000_000 if "10^6" in row["EXDOSU"] else 1))
            except InvalidOperation as exc:
                raise FieldError("total_cells", f"EXDOSE is not a number: {total!r}") from exc
    data = dose_from_fields(fields, dose_id=dose_id, zone=source.zone)
    _append(outcome, InboundType.DOSE, data, ids, dose_id)


def _enrollment(row: Row, outcome: Outcome, *ids: str) -> None:
    _, _, subject, _ = ids
    fields = _mapped(row, DM_COLUMNS)
    if "enrolled_at" not in fields and row.get("RFSTDTC", "").strip():
        fields["enrolled_at"] = row["RFSTDTC"]
    if "arm" not in fields and row.get("ARM", "").strip():
        fields["arm"] = row["ARM"]
    data = enrollment_from_fields(fields)
    _append(outcome, InboundType.ENROLLMENT, data, ids, subject)


def _disposition(row: Row, outcome: Outcome, *ids: str) -> None:
    """A DS disposition event: the subject's study status (withdrawn, lost to follow-up, died, completed)."""
    _, _, subject, _ = ids
    category = row.get("DSCAT", "").strip().upper()
    if category in DS_MILESTONES:
        outcome.ignored.append(f"DS {subject} {row.get('DSDECOD', '')!r}: a {category.lower()}, not a disposition")
        return
    fields = _mapped(row, DS_COLUMNS)
    data = subject_status_from_fields(fields)
    _append(outcome, InboundType.SUBJECT_STATUS, data, ids, subject)


def _transfusion(row: Row, raw: Row, domain: str, source: SourceConfig, outcome: Outcome, *ids: str) -> None:
    """A PR (procedure) or CM (concomitant medication) row naming a blood product or a transfusion."""
    _, _, subject, _ = ids
    seq = _seq(row, f"{domain}SEQ")
    texts = [row.get(f"{domain}{name}", "") for name in ("TRT", "DECOD", "CAT", "SCAT")]
    product = product_from_text(*texts)
    if product is None:
        outcome.ignored.append(f"{domain} {subject} {domain}SEQ {seq}: not a transfusion ({texts[0]!r})")
        return
    category = " ".join(texts[2:]).lower()
    if domain == "CM" and product == "other" and not any(w in category for w in ("transfus", "blood")):
        # a medication list names plasma-derived drugs and fluids too: "other" needs a transfusion category
        outcome.ignored.append(f"CM {subject} CMSEQ {seq}: {texts[0]!r} is not filed as a blood product")
        return
    transfusion_id = f"{domain}SEQ-{seq}"
    fields = _mapped(row, PR_COLUMNS if domain == "PR" else CM_COLUMNS)
    fields.update(dose_fields(row.get(f"{domain}DOSE"), row.get(f"{domain}DOSU")))
    data = transfusion_from_fields(fields, transfusion_id=transfusion_id, product=product, zone=source.zone, raw=raw)
    _append(outcome, InboundType.TRANSFUSION, data, ids, transfusion_id)


def _sample(row: Row, source: SourceConfig, outcome: Outcome, *ids: str) -> None:
    """A BE (biospecimen event) collection: a protocol sample, identified by BEREFID (the specimen) or BESEQ."""
    _, _, subject, _ = ids
    event = " ".join(row.get(c, "") for c in ("BETERM", "BEDECOD")).strip()
    if "COLLECT" not in event.upper():
        outcome.ignored.append(f"BE {subject} {row.get('BESEQ', '')}: {event or 'no BETERM'!r} is not a collection")
        return
    sample_id = (row.get("BEREFID") or "").strip() or f"BESEQ-{_seq(row, 'BESEQ')}"
    fields = _mapped(row, BE_COLUMNS)
    data = sample_from_fields(fields, sample_id=sample_id, zone=source.zone)
    _append(outcome, InboundType.SAMPLE, data, ids, sample_id)


def _append(
    outcome: Outcome,
    type_: InboundType,
    data: BaseModel,
    ids: tuple[str, ...],
    record_id: str,
    *,
    assign_version: bool = False,
) -> None:
    """The row's record, keyed by subject, type and the row's id: SDTM rows carry no message ids."""
    study, site, subject, key = ids
    outcome.records.append(
        make_record(
            type_=type_,
            data=data,
            study=study,
            site=site,
            subject=subject,
            record_key=f"{key}:{type_.value}:{record_id}",
            assign_version=assign_version,
        )
    )


def _column_for(domain: str, field: str) -> str:
    tables = {
        "AE": AE_COLUMNS,
        "LB": LB_COLUMNS,
        "EX": EX_COLUMNS,
        "DM": DM_COLUMNS,
        "DS": DS_COLUMNS,
        "VS": VS_COLUMNS,
        "PR": {**PR_COLUMNS, "PRDOSE": "units"},
        "CM": {**CM_COLUMNS, "CMDOSE": "units"},
        "BE": BE_COLUMNS,
    }
    for column, name in tables.get(domain, {}).items():
        if name == field:
            return column
    return field
