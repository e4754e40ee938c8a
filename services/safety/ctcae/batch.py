"""Batch grading behind `sentinel ctcae grade-csv FILE`.

Reads rows with `term` (CTCAE term) or `test` (LBTESTCD or LOINC), `value`, `unit`, and optional `lln`,
`uln`, `baseline`, `baseline_abnormal`, `anticoagulated` (INR); writes every row back, columns unchanged,
plus `grade` and `reason`. A floor grade (missing data could make it higher) is written as its number, with
a reason that starts "at least grade N". A row whose value cannot be graded is still written (empty grade,
reason says why); a file that is malformed stops the run with `CsvFormatError` naming the line, because a
silently skipped row is a lab result nobody graded.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import TextIO

from services.safety.ctcae.grading import Grade, grade_test, grade_value, worst_grade

_TRUE = frozenset({"true", "t", "yes", "y", "1", "high", "abnormal"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "normal"})
_NUMERIC = ("lln", "uln", "baseline")
_OUTPUT = ("grade", "reason")


class CsvFormatError(ValueError):
    """The CSV cannot be read as a grading request; `line` is the 1-based line in the file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def _columns(header: list[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        key = name.strip().lower()
        if key in index:
            raise CsvFormatError(1, f"column {name!r} appears twice")
        index[key] = position
    for name in _OUTPUT:
        if name in index:
            raise CsvFormatError(1, f"input already has a {name!r} column")
    missing = [name for name in ("value", "unit") if name not in index]
    if "term" not in index and "test" not in index:
        missing.insert(0, "term or test")
    if missing:
        raise CsvFormatError(1, f"missing required column(s): {', '.join(missing)}")
    return index


def _flag(text: str, line: int, name: str = "baseline_abnormal") -> bool | None:
    key = text.strip().lower()
    if not key:
        return None
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise CsvFormatError(line, f"{name} {text!r} is not true/false")


def _grade_row(row: list[str], index: dict[str, int], line: int) -> Grade:
    def cell(name: str) -> str:
        position = index.get(name)
        return "" if position is None else row[position].strip()

    for name in _NUMERIC:
        text = cell(name)
        if text:
            try:
                Decimal(text)
            except InvalidOperation:
                raise CsvFormatError(line, f"{name} {text!r} is not a number") from None
    refs = {
        "lln": cell("lln") or None,
        "uln": cell("uln") or None,
        "baseline": cell("baseline") or None,
        "baseline_abnormal": _flag(cell("baseline_abnormal"), line),
        "anticoagulated": _flag(cell("anticoagulated"), line, "anticoagulated"),
    }
    term, test = cell("term"), cell("test")
    if term:
        return grade_value(term, cell("value"), cell("unit"), **refs)  # type: ignore[arg-type]
    if not test:
        raise CsvFormatError(line, "row has neither a term nor a test")
    results = grade_test(test, cell("value"), cell("unit"), **refs)  # type: ignore[arg-type]
    chosen = worst_grade(results)
    assert chosen is not None  # grade_test always returns at least one result
    if len(results) > 1:
        return replace(chosen, reason=f"{chosen.term}: {chosen.reason}")
    return chosen


def grade_csv(reader: TextIO, writer: TextIO) -> int:
    """Grade every row of `reader` into `writer`; returns the number of rows written (header excluded)."""
    rows = csv.reader(reader)
    out = csv.writer(writer, lineterminator="\n")
    try:
        header = next(rows, None)
        if header is None:
            raise CsvFormatError(1, "empty file: no header row")
        index = _columns(header)
        out.writerow([*header, *_OUTPUT])
        written = 0
        for row in rows:
            line = rows.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise CsvFormatError(line, f"expected {len(header)} fields, found {len(row)}")
            result = _grade_row(row, index, line)
            out.writerow([*row, "" if result.grade is None else str(result.grade), result.reason])
            written += 1
    except csv.Error as err:
        raise CsvFormatError(rows.line_num, str(err)) from None
    return written
