"""The blood-count plot draws what the officer reads (bands, baseline, window, every point with its value), and
the listings filter and export as a DSMB packet needs, without letting a cell run as a spreadsheet formula."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from xml.etree import ElementTree

from openpyxl import load_workbook

from services.console.listings import Filters, select_rows, table, to_csv, to_xlsx
from services.console.plots import series_svg

NOW = datetime(2026, 3, 20, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
SERIES = {
    "name": "neutrophils",
    "term": "Neutrophil count decreased",
    "unit": "10^9/L",
    "points": [
        {"result_id": "L-1", "collected_at": "2026-03-01T09:00:00Z", "value": "0.42", "censored": None, "grade": 4,
         "baseline": True},
        {"result_id": "L-2", "collected_at": "2026-03-04T09:00:00Z", "value": "0.1", "censored": "<", "grade": 4,
         "baseline": False},
    ],
    "bands": [{"grade": 1, "below": "1.8"}, {"grade": 2, "below": "1.5"}, {"grade": 3, "below": "1.0"},
              {"grade": 4, "below": "0.5"}],
    "baseline": "0.42",
}  # fmt: skip
WINDOW = {"start": "2026-03-02T10:00:00Z", "end": "2026-03-30T10:00:00Z"}


def test_the_plot_is_valid_svg_with_bands_baseline_window_and_points() -> None:
    svg = series_svg(SERIES, window=WINDOW, infusions=[datetime(2026, 3, 2, 10, tzinfo=UTC)], now=NOW)
    root = ElementTree.fromstring(svg)
    assert root.get("role") == "img" and root.find(f"{SVG}title") is not None
    assert "Baseline 0.42 10^9/L" in (root.findtext(f"{SVG}desc") or "")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"G1 <1.8", "G2 <1.5", "G3 <1.0", "G4 <0.5", "baseline 0.42", "DLT window"} <= set(texts)
    points = [c.findtext(f"{SVG}title") for c in root.iter(f"{SVG}circle")]
    assert points == [
        "0.42 10^9/L, 2026-03-01 09:00 UTC, grade 4 (baseline)",
        "<0.1 10^9/L, 2026-03-04 09:00 UTC, grade 4",
    ]
    lower, higher = (float(c.get("cy", "0")) for c in root.iter(f"{SVG}circle"))
    assert higher > lower  # 0.1 is drawn below 0.42 (SVG y grows downwards)
    assert [line.get("class") for line in root.iter(f"{SVG}line")].count("infusion") == 1


def test_an_empty_series_says_so() -> None:
    svg = series_svg({**SERIES, "points": [], "baseline": None}, window=None, infusions=[], now=NOW)
    assert "no results" in svg and ElementTree.fromstring(svg) is not None


ROWS = [
    {"subject_id": "101-001", "site_id": "101", "arm": "A", "term": "=HYPERLINK(\"http://x\")", "grade": 3,
     "max_grade": 3, "serious": True, "criteria": ["hospitalization"]},
    {"subject_id": "101-002", "site_id": "101", "arm": "B", "term": "Pneumonitis", "ctcae_term": "Pneumonitis",
     "grade": 1, "max_grade": 2, "serious": False, "criteria": []},
]  # fmt: skip


def test_filters_select_by_subject_arm_term_and_worst_grade() -> None:
    assert [r["subject_id"] for r in select_rows(ROWS, Filters(arm="b"))] == ["101-002"]
    assert [r["subject_id"] for r in select_rows(ROWS, Filters(min_grade=3))] == ["101-001"]
    assert [r["subject_id"] for r in select_rows(ROWS, Filters(min_grade=2, term="pneum"))] == ["101-002"]
    assert select_rows(ROWS, Filters(subject="101-009")) == []


def test_csv_and_xlsx_carry_every_row_and_quote_formulas() -> None:
    header, cells = table("ae", ROWS)
    text = to_csv(header, cells).decode("utf-8-sig")
    assert text.splitlines()[0].startswith("Subject,Site,Arm,AE id,CTCAE term,Reported term,Grade (latest)")
    assert "'=HYPERLINK" in text and ",hospitalization," in text
    book = load_workbook(io.BytesIO(to_xlsx("Adverse events", header, cells, note="test")))
    sheet = book["Adverse events"]
    values = [[c.value for c in row] for row in sheet.iter_rows()]
    assert values[0][:3] == ["Subject", "Site", "Arm"] and len(values) == 3
    assert values[1][4] == '\'=HYPERLINK("http://x")' and values[2][6] == 1
