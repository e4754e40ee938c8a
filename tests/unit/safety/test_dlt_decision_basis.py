"""The pure rule that tells a DLT's officers when the data their decision relied on change under it: what it says, to
whom it says nothing, and that it says it once."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from services.safety.dlt_decision_basis import (
    DECIDED_DLT_DATA_CHANGED,
    DataLook,
    Divergence,
    check_basis,
    divergence,
)
from services.safety.models import DltRecord

DECIDED_AT = datetime(2026, 3, 12, 9, 30, tzinfo=UTC)
MEETS = DataLook(
    term="Pneumonitis",
    version=1,
    grade=3,
    relatedness="possible",
    meets=True,
    criterion="non_haematological_grade3",
    reason="grade 3 'Pneumonitis' (possible) meets non_haematological_grade3",
)
NOT_RELATED = replace(
    MEETS,
    version=2,
    relatedness="not_related",
    meets=False,
    criterion=None,
    reason="grade 3 'Pneumonitis': meets no DLT criterion (non_haematological_grade3: relatedness not_related below "
    "possible)",
)


def decided(state: str, **fields: Any) -> DltRecord:
    values: dict[str, Any] = {
        "dlt_id": "dlt-0123",
        "trial_id": "NCT07212335",
        "subject_id": "101-004",
        "ae_id": "AE-7",
        "arm": "A",
        "state": state,
        "criterion": "non_haematological_grade3",
        "term": "Pneumonitis",
        "grade": 3,
        "relatedness": "possible",
        "ae_version": 1,
        "reason": "meets",
        "suspected_at": DECIDED_AT,
        "updated_at": DECIDED_AT,
        "decided_by": "olga",
        "decided_at": DECIDED_AT,
        "decision_reason": "CT: drug pneumonitis",
        "decided_grade": 3,
        "decided_criterion": "non_haematological_grade3",
        "decided_relatedness": "possible",
        "decided_met": True,
        "divergence": None,
    }
    values.update(fields)
    return DltRecord(**values)


def test_a_confirmed_dlt_whose_ae_becomes_not_related_tells_the_officers_what_changed_and_how_to_revise() -> None:
    check = check_basis(decided("confirmed"), NOT_RELATED)
    assert check.divergence is Divergence.NO_LONGER_MEETS
    assert check.finding is not None and check.finding.code == DECIDED_DLT_DATA_CHANGED
    detail = check.finding.detail
    for fact in (
        "Subject 101-004",
        "AE AE-7 (Pneumonitis, grade 3; AE version 2)",
        "relatedness from possible to not related",
        "no longer meets the DLT criterion 'non_haematological_grade3' it was confirmed under",
        "DLT dlt-0123 was confirmed by olga on 2026-03-12 09:30 UTC ('CT: drug pneumonitis')",
        "still counts in arm A's 3+3 tally",
        "'Revise this decision'",
        "reject DLT dlt-0123 with expected_state 'confirmed'",
        "relatedness not_related below possible",
    ):
        assert fact in detail, fact


def test_the_same_divergence_is_told_once_whatever_follows() -> None:
    told = decided("confirmed", divergence="no_longer_meets")
    assert check_basis(told, NOT_RELATED) == check_basis(told, replace(NOT_RELATED, version=3))
    assert check_basis(told, NOT_RELATED).finding is None
    assert check_basis(told, NOT_RELATED).divergence is Divergence.NO_LONGER_MEETS, "kept, so it stays told"


def test_data_back_to_what_the_confirmation_relied_on_are_told_once_too() -> None:
    back = replace(MEETS, version=3)
    check = check_basis(decided("confirmed", divergence="no_longer_meets"), back)
    assert check.divergence is None and check.finding is not None
    assert "meets DLT criterion 'non_haematological_grade3' again (relatedness possible)" in check.finding.detail
    assert "nothing needs revising on that account" in check.finding.detail
    assert check_basis(decided("confirmed"), back).finding is None, "then silent"


def test_a_grade_change_is_named_with_the_relatedness() -> None:
    lower = replace(NOT_RELATED, grade=2)
    finding = check_basis(decided("confirmed"), lower).finding
    assert finding is not None
    assert "relatedness from possible to not related and grade from 3 to 2" in finding.detail


def test_a_change_that_is_neither_relatedness_nor_grade_gives_the_rules_reason() -> None:
    outside = replace(MEETS, meets=False, criterion=None, reason="onset on study day 40, after the DLT window")
    finding = check_basis(decided("confirmed"), outside).finding
    assert finding is not None
    assert "the site's data changed since the decision; the AE no longer meets" in finding.detail
    assert "(onset on study day 40, after the DLT window)" in finding.detail


def test_a_confirmation_made_on_data_that_met_no_criterion_is_never_told_they_still_do_not() -> None:
    overridden = decided("confirmed", decided_met=False, decided_relatedness="not_related")
    assert check_basis(overridden, NOT_RELATED) == check_basis(overridden, MEETS)
    assert check_basis(overridden, NOT_RELATED).finding is None


def test_an_ae_the_site_took_back_is_left_to_its_own_finding() -> None:
    retracted = replace(NOT_RELATED, active=False)
    assert check_basis(decided("confirmed"), retracted).finding is None
    told = check_basis(decided("confirmed", divergence="no_longer_meets"), retracted)
    assert (told.divergence, told.finding) == (None, None), "no 'back to normal' notice for a retraction"


def test_a_rejected_dlt_whose_relatedness_rises_is_re_raised_with_how_to_confirm_it() -> None:
    definite = replace(MEETS, version=2, relatedness="definite")
    check = check_basis(decided("rejected", decision_reason="SRC: CMV on BAL"), definite)
    assert check.divergence is Divergence.MORE_RELATED and check.finding is not None
    for fact in (
        "relatedness rose from possible, as the committee saw it, to definite",
        "meets DLT criterion 'non_haematological_grade3'",
        "was rejected by olga on 2026-03-12 09:30 UTC ('SRC: CMV on BAL')",
        "does not count in arm A's 3+3 tally",
        "confirm DLT dlt-0123 with expected_state 'rejected'",
    ):
        assert fact in check.finding.detail, fact


def test_a_rejection_of_an_unrelated_ae_is_re_raised_when_the_ae_meets_a_criterion() -> None:
    rejected = decided("rejected", decided_met=False, decided_relatedness="not_related")
    check = check_basis(rejected, replace(MEETS, version=3))
    assert check.divergence is Divergence.NOW_MEETS and check.finding is not None
    assert "relatedness from not related to possible" in check.finding.detail
    assert "which it did not when rejected" in check.finding.detail


@pytest.mark.parametrize("relatedness", ["not_related", "unlikely", "possible"])
def test_a_rejection_is_not_re_raised_by_data_that_show_no_more_than_it_saw(relatedness: str) -> None:
    look = replace(MEETS, relatedness=relatedness, meets=relatedness == "possible")
    assert check_basis(decided("rejected"), look) == check_basis(decided("rejected"), MEETS)
    assert check_basis(decided("rejected"), look).finding is None


def test_an_unassessed_relatedness_the_site_then_assesses_as_related_is_news_to_a_rejection() -> None:
    rejected = decided("rejected", decided_relatedness=None)
    assert divergence(rejected, MEETS) is Divergence.MORE_RELATED


def test_undecided_and_reopened_records_are_not_this_rules_business() -> None:
    for state in ("suspected", "withdrawn"):
        assert check_basis(decided(state, decided_at=None, decided_met=None), NOT_RELATED).finding is None
    reopened = decided("suspected", divergence="more_related")  # a worse grade reopened it: dlt.suspected tells
    assert check_basis(reopened, replace(MEETS, grade=4)) == check_basis(reopened, MEETS)
    assert (check_basis(reopened, MEETS).divergence, check_basis(reopened, MEETS).finding) == (None, None)


def test_a_decision_from_before_its_data_were_kept_is_taken_to_have_met_a_criterion() -> None:
    legacy = decided("confirmed", decided_met=None, decided_relatedness=None)
    assert divergence(legacy, NOT_RELATED) is Divergence.NO_LONGER_MEETS, "told, rather than hidden"


def test_lab_based_dlts_are_described_by_their_labs() -> None:
    labs = decided("confirmed", ae_id="lab:Neutrophil count decreased", decided_relatedness=None, decided_grade=4)
    look = DataLook("Neutrophil count decreased", 1, None, None, False, None, "'Neutrophil count decreased' labs no")
    finding = check_basis(labs, look).finding
    assert finding is not None
    assert "Subject 101-004, the 'Neutrophil count decreased' lab results: the site's data changed" in finding.detail
    assert "relatedness" not in finding.detail


LOOKS = [
    MEETS,
    NOT_RELATED,
    replace(MEETS, relatedness="definite"),
    replace(MEETS, relatedness=None),
    replace(NOT_RELATED, active=False),
]


@pytest.mark.parametrize("state", ["confirmed", "rejected", "suspected"])
def test_what_is_stored_depends_on_the_decision_and_the_data_only(state: str) -> None:
    """Whatever was stored before (any earlier look, in any order), the divergence stored after a look is the same:
    the same data in any order end in the same state."""
    for met, stored, look in itertools.product((True, False), [None, *Divergence], LOOKS):
        record = decided(state, decided_met=met, divergence=stored.value if stored else None)
        assert check_basis(record, look).divergence is divergence(decided(state, decided_met=met), look)
