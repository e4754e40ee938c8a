"""The DLT card tells the officer, where they would revise the decision, that the data it rested on changed since."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.console.main import templates

DLT: dict[str, Any] = {
    "dlt_id": "dlt-1",
    "subject_id": "A-1",
    "arm": "A",
    "ae_id": "AE-1",
    "term": "Pneumonitis",
    "grade": 3,
    "state": "confirmed",
    "relatedness": "not_related",
    "reason": "grade 3 'Pneumonitis': meets no DLT criterion",
    "decided_by": "olga",
    "decided_at": "2026-03-12T09:00:00Z",
    "decision_reason": "CT: drug pneumonitis",
    "revision": 2,
    "decided_relatedness": "possible",
    "divergence": "no_longer_meets",
}


def card(clock: Any = None, **dlt: Any) -> str:
    shown = {"dlt": {**DLT, **dlt}, "criterion": "", "placement": "", "versions": [], "labs": [], "clock": clock}
    context = {
        "card": shown,
        "can_act": True,
        "revisable": True,
        "back": "/console/dlts/dlt-1",
        "session": {"csrf": "c"},
    }
    html = templates().get_template("dlt_card.html").render(context)
    return re.sub(r"\s+", " ", html)


def test_a_confirmed_dlt_whose_data_no_longer_meet_a_criterion_says_so_above_the_revision() -> None:
    html = card()
    note = (
        "Data changed since the decision: the AE no longer meets a DLT criterion (relatedness possible at the "
        "decision, not related now). The confirmation stands until revised: review it and, if need be, revise it below."
    )
    assert note in html
    assert html.index(note) < html.index("Revise this decision")


@pytest.mark.parametrize(
    ("divergence", "words"),
    [
        ("now_meets", "the AE now meets a DLT criterion it did not meet when rejected"),
        ("more_related", "the investigator's relatedness rose above what the committee saw"),
    ],
)
def test_a_rejected_dlt_the_data_now_contradict_says_so(divergence: str, words: str) -> None:
    html = card(state="rejected", divergence=divergence, relatedness="definite")
    assert f"{words} (relatedness possible at the decision, definite now). The rejection stands" in html


def test_nothing_is_said_when_the_data_are_as_the_decision_relied_on() -> None:
    assert "Data changed since the decision" not in card(divergence=None, relatedness="possible")


def test_the_decided_list_marks_a_dlt_whose_data_changed_since_its_decision() -> None:
    context = {
        "cards": [],
        "review_hours": 72,
        "decided": [{**DLT, "updated_at": DLT["decided_at"]}, {**DLT, "dlt_id": "dlt-2", "divergence": None}],
        "request": None,
    }
    html = templates().get_template("dlts.html").render(context)
    assert html.count("data changed</a>") == 1 and 'href="/console/dlts/dlt-1" title="The AE' in html


def test_a_confirmation_reopened_by_a_recode_says_why_it_is_suspected_and_whose_decision_is_on_file() -> None:
    due = SimpleNamespace(due_at=datetime(2026, 3, 17, 14, tzinfo=UTC), overdue=False, text="71 h left")
    html = card(
        clock=due,
        state="suspected",
        divergence="other_event",
        term="Anemia",
        decided_state="confirmed",
        decided_term="Pneumonitis",
        relatedness="possible",
    )
    assert "the AE is now 'Anemia', another event than the 'Pneumonitis' confirmed" in html
    assert "counts in the arm's 3+3 as under review until it is confirmed or rejected below" in html
    assert "Decision</dt><dd>confirmed by olga" in html.replace("<dd> ", "<dd>")
    assert "Data changed since the decision" not in html


def test_a_confirmation_whose_ae_was_recoded_to_another_event_of_its_criterion_names_both_terms() -> None:
    html = card(divergence="recoded", term="Colitis", decided_term="Pneumonitis", relatedness="possible")
    assert (
        "Data changed since the decision: the AE was recoded to 'Colitis', another event than the 'Pneumonitis' "
        "confirmed, which the committee never adjudicated; it still meets the criterion confirmed (relatedness "
        "possible at the decision, possible now). The confirmation stands until revised"
    ) in html
    assert "relatedness rose" not in html


def test_a_rejection_whose_ae_was_recoded_to_another_event_of_its_criterion_names_both_terms() -> None:
    html = card(
        state="rejected", divergence="recoded", term="Colitis", decided_term="Pneumonitis", relatedness="possible"
    )
    assert (
        "the AE was recoded to 'Colitis', another event than the 'Pneumonitis' rejected, which the committee never "
        "adjudicated; it meets the criterion it was rejected under"
    ) in html
    assert "The rejection stands until revised" in html
