"""Pure: line listings (AEs, SAEs, DLTs, lab toxicities) as rows, filtered, and written as CSV or XLSX for a
DSMB/SRC packet. Cells that a spreadsheet would run as a formula are quoted (CSV/formula injection)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from openpyxl import Workbook

from services.console.presenting import when

Kind = Literal["ae", "sae", "dlt", "lab"]
KINDS: dict[str, str] = {
    "ae": "Adverse events",
    "sae": "Serious adverse events",
    "dlt": "Dose-limiting toxicities",
    "lab": "Lab toxicities",
}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: Callable[[Mapping[str, Any]], object]


def _get(key: str) -> Callable[[Mapping[str, Any]], object]:
    return lambda row: row.get(key)


def _time(key: str) -> Callable[[Mapping[str, Any]], object]:
    return lambda row: when(row[key]) if row.get(key) else ""


def _joined(key: str) -> Callable[[Mapping[str, Any]], object]:
    return lambda row: ", ".join(str(v).replace("_", " ") for v in row.get(key) or [])


AE_COLUMNS = [
    Column("subject_id", "Subject", _get("subject_id")),
    Column("site_id", "Site", _get("site_id")),
    Column("arm", "Arm", _get("arm")),
    Column("ae_id", "AE id", _get("ae_id")),
    Column("ctcae_term", "CTCAE term", lambda r: r.get("ctcae_term") or r.get("term")),
    Column("term", "Reported term", _get("term")),
    Column("grade", "Grade (latest)", _get("grade")),
    Column("max_grade", "Worst grade", _get("max_grade")),
    Column("serious", "Serious", lambda r: "yes" if r.get("serious") else "no"),
    Column("criteria", "Seriousness criteria", _joined("criteria")),
    Column("relatedness", "Relatedness", _get("relatedness")),
    Column("onset", "Onset", _get("onset")),
    Column("end", "End", _get("end")),
    Column("outcome", "Outcome", _get("outcome")),
    Column("awareness_at", "Site awareness", _time("awareness_at")),
    Column("latest_version", "Version", _get("latest_version")),
    Column("status", "Record status", _get("status")),
    Column("dlt_state", "DLT review", _get("dlt_state")),
]
DLT_COLUMNS = [
    Column("subject_id", "Subject", _get("subject_id")),
    Column("arm", "Arm", _get("arm")),
    Column("dlt_id", "DLT id", _get("dlt_id")),
    Column("ae_id", "AE id", _get("ae_id")),
    Column("term", "Term", _get("term")),
    Column("grade", "Grade", _get("grade")),
    Column("relatedness", "Relatedness", _get("relatedness")),
    Column("criterion", "Criterion", _get("criterion")),
    Column("state", "State", _get("state")),
    Column("suspected_at", "Suspected", _time("suspected_at")),
    Column("decided_by", "Decided by", _get("decided_by")),
    Column("decided_at", "Decided", _time("decided_at")),
    Column("decision_reason", "Decision reason", _get("decision_reason")),
]
LAB_COLUMNS = [
    Column("subject_id", "Subject", _get("subject_id")),
    Column("site_id", "Site", _get("site_id")),
    Column("arm", "Arm", _get("arm")),
    Column("collected_at", "Collected", _time("collected_at")),
    Column("test", "Test", _get("test")),
    Column("term", "CTCAE term", _get("term")),
    Column("value", "Value", _get("value")),
    Column("unit", "Unit", _get("unit")),
    Column("lln", "LLN", _get("lln")),
    Column("uln", "ULN", _get("uln")),
    Column("grade", "Grade", _get("grade")),
    Column("baseline_grade", "Baseline grade", _get("baseline_grade")),
    Column("baseline", "Baseline sample", lambda r: "yes" if r.get("baseline") else "no"),
    Column("grade_reason", "Grading", _get("grade_reason")),
]


def columns(kind: Kind) -> list[Column]:
    return {"ae": AE_COLUMNS, "sae": AE_COLUMNS, "dlt": DLT_COLUMNS, "lab": LAB_COLUMNS}[kind]


@dataclass(frozen=True)
class Filters:
    subject: str = ""
    site: str = ""
    arm: str = ""
    term: str = ""
    min_grade: int | None = None
    state: str = ""

    def active(self) -> bool:
        return any((self.subject, self.site, self.arm, self.term, self.min_grade is not None, self.state))


def _grade_of(row: Mapping[str, Any]) -> int | None:
    for key in ("max_grade", "grade"):
        value = row.get(key)
        if isinstance(value, int):
            return value
    return None


def select_rows(rows: Iterable[Mapping[str, Any]], filters: Filters) -> list[Mapping[str, Any]]:
    """Exact subject, site, arm and state; the term by substring, case-insensitive; the worst grade at least."""
    found = []
    for row in rows:
        if filters.subject and str(row.get("subject_id", "")).casefold() != filters.subject.casefold():
            continue
        if filters.site and str(row.get("site_id", "")).casefold() != filters.site.casefold():
            continue
        if filters.arm and str(row.get("arm") or "").casefold() != filters.arm.casefold():
            continue
        if filters.state and str(row.get("state") or row.get("dlt_state") or "") != filters.state:
            continue
        terms = f"{row.get('term') or ''} {row.get('ctcae_term') or ''}"
        if filters.term and filters.term.casefold() not in terms.casefold():
            continue
        if filters.min_grade is not None and (_grade_of(row) or 0) < filters.min_grade:
            continue
        found.append(row)
    return found


def table(kind: Kind, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[object]]]:
    cols = columns(kind)
    return [c.label for c in cols], [[c.value(row) for c in cols] for row in rows]


def _safe(cell: object) -> object:
    """A text cell starting with =, +, -, @ (or a tab/CR) would run as a formula in a spreadsheet: quote it."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(cell)
        except ValueError:
            return "'" + cell
    return "" if cell is None else cell


def to_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_safe(c) for c in row] for row in rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")  # BOM: spreadsheets then read UTF-8 names correctly


def to_xlsx(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], *, note: str) -> bytes:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title[:31])
    sheet.append(list(header))
    for row in rows:
        sheet.append([_safe(c) for c in row])
    about = workbook.create_sheet("About")
    about.append([note])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
