"""A subject screened or enrolled but never dosed: not in the 3+3 count once off study; holds a place until then."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.safety.evaluability import SubjectFacts, assess_subject
from shared.protocol import CohortRules

NOW = datetime(2026, 4, 1, tzinfo=UTC)


def facts(status: str, *, given: int = 0) -> SubjectFacts:
    return SubjectFacts(
        subject_id="S-1",
        arm="A",
        enrolment_active=True,
        study_status=status,  # type: ignore[arg-type]
        infusions_planned=1,
        infusions_given=given,
        window=None,
        missing_assessments=(),
        assessments_due_by=None,
        dlt_confirmed=0,
        dlt_suspected=0,
    )


@pytest.mark.parametrize("status", ["withdrawn", "lost_to_follow_up", "died", "completed"])
def test_off_study_before_any_infusion_is_not_counted(status: str) -> None:
    outcome = assess_subject(facts(status), rules=CohortRules(), now=NOW)
    assert outcome.outcome == "excluded" and not outcome.counted
    assert "never dosed" in outcome.reason


def test_awaiting_the_first_infusion_keeps_the_place() -> None:
    outcome = assess_subject(facts("on_study"), rules=CohortRules(), now=NOW)
    assert outcome.outcome == "pending" and outcome.counted


def test_withdrawn_after_an_infusion_still_needs_a_replacement() -> None:
    outcome = assess_subject(facts("withdrawn", given=1), rules=CohortRules(), now=NOW)
    assert outcome.outcome == "not_evaluable"
