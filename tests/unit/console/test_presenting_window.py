"""The DLT card says where the onset falls in the study days safety counts (its reason says the same)."""

from __future__ import annotations

from services.console.presenting import onset_placement

DLT = {"window_start": "2026-11-29T09:24:00Z", "window_end": "2026-12-28T00:00:00Z"}
WINDOW = {"first_day": "2026-11-29", "last_day": "2026-12-27"}


def test_infusion_day_is_day_0_when_the_protocol_counts_so() -> None:
    text = onset_placement(DLT, "2026-11-29", window=WINDOW, first_number=0)
    assert text.startswith("onset 2026-11-29 is study day 0 (window: days 0-28): inside")
    assert "study day 29 (window: days 0-28): outside" in onset_placement(
        DLT, "2026-12-28", window=WINDOW, first_number=0
    )


def test_day_1_counting_and_a_missing_window_view() -> None:
    window = {"first_day": "2026-11-29", "last_day": "2026-12-26"}
    assert "study day 28 (window: days 1-28): inside" in onset_placement(
        DLT, "2026-12-26", window=window, first_number=1
    )
    assert onset_placement(DLT, "2026-12-01", window=None, first_number=0).startswith("onset 2026-12-01: window")
    assert onset_placement({}, "2026-12-01", window=WINDOW, first_number=0).startswith("no DLT window yet")
