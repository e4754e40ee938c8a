"""What the pages show: the SAE clock in hours and minutes, the inbox soonest-due first, a readable timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.console.presenting import clock, detail_rows, duration, inbox, relevant_labs, timeline

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def alert(alert_id: str, *, due: datetime | None, state: str = "open", kind: str = "sae") -> dict[str, Any]:
    obligations = (
        [{"id": f"ob-{alert_id}", "state": "open", "due_at": due.isoformat(), "kind": "sae_report"}] if due else []
    )
    return {"id": alert_id, "state": state, "kind": kind, "obligations": obligations, "created_at": NOW.isoformat()}


def test_the_clock_reads_in_hours_and_minutes_and_turns_overdue() -> None:
    assert clock(NOW + timedelta(hours=23, minutes=5, seconds=59), NOW).text == "23 h 05 min left"
    assert clock(NOW + timedelta(minutes=45), NOW).text == "45 min left"
    assert clock(NOW + timedelta(hours=72), NOW).text == "72 h 00 min left"  # a DLT review clock stays in hours
    late = clock(NOW - timedelta(hours=1, minutes=10), NOW)
    assert late.overdue and late.text == "overdue by 1 h 10 min"
    assert duration(timedelta(days=9, hours=2)) == "9 d 2 h"


def test_inbox_soonest_deadline_first_resolved_left_out_information_apart() -> None:
    alerts = [
        alert("later", due=NOW + timedelta(hours=20)),
        alert("info", due=None, kind="lab_toxicity"),
        alert("overdue", due=NOW - timedelta(minutes=5)),
        alert("done", due=NOW + timedelta(hours=1), state="resolved"),
        alert("soon", due=NOW + timedelta(hours=2)),
    ]
    timed, informational = inbox(alerts, NOW)
    assert [i.alert["id"] for i in timed] == ["overdue", "soon", "later"]
    assert timed[0].clocks["ob-overdue"].overdue
    assert [i.alert["id"] for i in informational] == ["info"]


def test_who_was_paged_last_and_when() -> None:
    item = inbox([{**alert("a", due=NOW), "deliveries": [
        {"recipient": "b@x", "sent_at": "2026-03-01T02:00:10Z"},
        {"recipient": "a@x", "sent_at": "2026-03-01T02:00:05Z"},
        {"recipient": "first@x", "sent_at": "2026-03-01T01:00:00Z"},
    ]}], NOW)[0][0]  # fmt: skip
    assert item.last_paged == "2026-03-01 02:00 UTC: a@x, b@x"


def subject() -> dict[str, Any]:
    window = {"start": "2026-03-02T10:00:00Z", "end": "2026-03-30T10:00:00Z"}
    return {
        "arm": "A",
        "enrolled_at": "2026-03-01",
        "dlt_window": window,
        "doses": [{"dose_id": "D-1", "number": 1, "administered_at": "2026-03-02T10:00:00Z", "cells_per_kg": "2e6"}],
        "labs": [
            {"result_id": "L-0", "test": "NEUT", "value": "0.4", "unit": "10^9/L", "collected_at": "2026-03-01T09:00Z",
             "grade": 4, "grade_reason": "grade 4", "baseline": True, "term": "Neutrophil count decreased"},
            {"result_id": "L-1", "test": "ALT", "value": "262", "unit": "U/L", "collected_at": "2026-03-05T09:00Z",
             "grade": 3, "grade_reason": "grade 3", "baseline": False, "term": "Alanine aminotransferase increased"},
            {"result_id": "L-2", "test": "ALT", "value": "20", "unit": "U/L", "collected_at": "2026-04-20T09:00Z",
             "grade": 0, "grade_reason": "", "baseline": False, "term": "Alanine aminotransferase increased"},
        ],
        "adverse_events": [{"ae_id": "AE-1", "serious": True, "status": None, "versions": [
            {"version": 1, "received_at": "2026-03-04T08:00Z", "flags": [],
             "payload": {"term": "Fever", "grade": 2, "serious": False, "onset": "2026-03-03"}},
            {"version": 2, "received_at": "2026-03-04T12:00Z", "flags": [],
             "payload": {"term": "Fever, hypotension", "grade": 3, "serious": True, "onset": "2026-03-03"}},
        ]}],
        "dlts": [],
    }  # fmt: skip


def test_timeline_in_order_with_the_dlt_window_marked_and_every_ae_version() -> None:
    visits = [
        {"name": "day 7", "due_from": "2026-03-07T00:00Z", "due_until": "2026-03-10T00:00Z", "state": "missed",
         "missing": ["lab"]},
        {"name": "day 28", "due_from": "2026-03-27T00:00Z", "due_until": "2026-03-31T00:00Z", "state": "upcoming",
         "missing": []},
    ]  # fmt: skip
    events = timeline(subject(), visits)
    assert [e.kind for e in events] == ["enrolment", "lab", "infusion", "ae", "ae", "lab", "visit", "lab"]
    versions = [e for e in events if e.kind == "ae"]
    assert [v.title for v in versions] == ["AE-1 v1: Fever", "AE-1 v2: Fever, hypotension"]
    assert [v.flag for v in versions] == ["", "serious"] and all(v.in_window for v in versions)
    labs = [e for e in events if e.kind == "lab"]
    assert [lab.in_window for lab in labs] == [False, True, False]
    assert [e.flag for e in events if e.kind == "visit"] == ["missed"]  # upcoming visits stay in the visit list


def test_relevant_labs_for_a_dlt_are_its_window_and_the_baselines() -> None:
    dlt = {"term": "Pneumonitis", "window_start": "2026-03-02T10:00:00Z", "window_end": "2026-03-30T10:00:00Z"}
    assert [lab["result_id"] for lab in relevant_labs(subject(), dlt)] == ["L-0", "L-1"]


def test_details_read_as_words_and_utc_times() -> None:
    rows = dict(detail_rows({"awareness_at": "2026-03-01T01:02:03Z", "relatedness": "not_related",
                             "criteria": ["hospitalization", "life_threatening"], "source_event_id": "x",
                             "outcome": None, "dlt_id": "d-1"}))  # fmt: skip
    assert rows == {
        "Awareness at": "2026-03-01 01:02 UTC",
        "Relatedness": "not related",
        "Criteria": "hospitalization, life threatening",
        "DLT id": "d-1",
    }


def test_a_withdrawals_bookkeeping_is_not_shown() -> None:
    """The numbers and receipt time notify orders a lab withdrawal by mean nothing to the officer; the result it
    withdrew does."""
    details = {"withdrawn_through": 2, "withdrawn_received_at": "2026-03-01T01:02:03Z", "withdrawn_result_id": "P8"}
    assert list(dict(detail_rows(details)).values()) == ["P8"]


def test_a_revised_result_is_named_once() -> None:
    """A result revised within its grade is the one shown, withdrawn and standing: one row names it; a withdrawal of
    another result keeps its own row."""
    revised = {"result_id": "P8", "standing_result_id": "P8", "withdrawn_result_id": "P8"}
    assert detail_rows(revised) == [("Result id", "P8")]
    other = {"result_id": "P9", "standing_result_id": "P9", "withdrawn_result_id": "P8"}
    assert detail_rows(other) == [("Result id", "P9"), ("Withdrawn result id", "P8")]
