"""`grade_csv`: same rows and columns out, plus grade and reason; malformed files name the line."""

from __future__ import annotations

import csv
import io

import pytest

from services.safety.ctcae import CsvFormatError, grade_csv


def run(text: str) -> tuple[int, list[dict[str, str]], list[str]]:
    out = io.StringIO()
    count = grade_csv(io.StringIO(text), out)
    out.seek(0)
    reader = csv.DictReader(out)
    rows = list(reader)
    return count, rows, list(reader.fieldnames or [])


def test_happy_path() -> None:
    text = (
        "subject,term,test,value,unit,lln,uln,baseline,baseline_abnormal\n"
        "S1,Neutrophil count decreased,,0.9,10^9/L,1.5,7.5,,\n"
        "S2,,K,6.2,mmol/L,3.5,5.1,,\n"
        "S3,,ALT,150,U/L,,40,100,true\n"
        "S4,,HGB,7.5,g/dL,12,16,,\n"
        "S5,Anemia,,100,G/cL,120,,,\n"
        "S6,,PLAT,<20,10^9/L,,,,\n"
    )
    count, rows, header = run(text)
    assert count == 6
    assert header == [
        "subject",
        "term",
        "test",
        "value",
        "unit",
        "lln",
        "uln",
        "baseline",
        "baseline_abnormal",
        "grade",
        "reason",
    ]
    assert [r["subject"] for r in rows] == ["S1", "S2", "S3", "S4", "S5", "S6"]
    assert [r["grade"] for r in rows] == ["3", "3", "1", "3", "", "4"]
    assert rows[1]["reason"].startswith("Hyperkalemia:")
    assert rows[3]["reason"].startswith("Anemia:")
    assert "G/cL" in rows[4]["reason"]


def test_blank_lines_skipped_and_crlf_ok() -> None:
    count, rows, _ = run("term,value,unit,lln\r\nAnemia,70,g/L,120\r\n\r\nAnemia,130,g/L,120\r\n")
    assert count == 2
    assert [r["grade"] for r in rows] == ["3", "0"]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "empty"),
        ("term,value\nAnemia,70\n", 1, "unit"),
        ("value,unit\n70,g/L\n", 1, "term or test"),
        ("term,value,unit,grade\nAnemia,70,g/L,\n", 1, "grade"),
        ("term,value,unit\nAnemia,70,g/L\nAnemia,70\n", 3, "expected 3 fields"),
        ("term,value,unit,lln\nAnemia,70,g/L,120\nAnemia,70,g/L,abc\n", 3, "lln"),
        ("term,value,unit,baseline_abnormal\nAnemia,70,g/L,maybe\n", 2, "baseline_abnormal"),
        ("term,test,value,unit\n,,70,g/L\n", 2, "neither"),
        ('term,value,unit\nAnemia,70,g/L\n\nAnemia,"7\n0",g/L,x\n', 5, "fields"),
    ],
)
def test_malformed_file_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(CsvFormatError) as info:
        run(text)
    assert info.value.line == line
    assert words in info.value.message
