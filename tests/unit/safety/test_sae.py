"""ICH E2A seriousness folded over an AE's versions: never downgraded, clock from awareness, not processing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.safety.sae import REPORTED_SERIOUS, SaeSignalKind, SaeState, assess_ae, criteria_of
from shared.events import AeData, AwarenessBasis, SeriousnessCriteria

RECEIVED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
AWARE = datetime(2026, 3, 1, 6, 15, tzinfo=UTC)
CRITERIA = list(SeriousnessCriteria.model_fields)


def ae(version: int = 1, **changes: Any) -> AeData:
    return AeData.model_validate({"ae_id": "AE-1", "version": version, "term": "Pneumonia", "grade": 2, **changes})


def fold(*versions: AeData) -> list[Any]:
    state: SaeState | None = None
    results = []
    for n, version in enumerate(versions):
        result = assess_ae(state, version, received_at=RECEIVED + timedelta(hours=n))
        state = result.state
        results.append(result)
    return results


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_ich_e2a_criterion_makes_the_ae_serious(criterion: str) -> None:
    [result] = fold(ae(seriousness={criterion: True}))
    assert result.state.serious
    assert result.state.criteria == {criterion}
    assert result.signal is SaeSignalKind.DETECTED


def test_non_serious_ae_opens_nothing() -> None:
    [result] = fold(ae(serious=False, seriousness={}))
    assert not result.state.serious
    assert result.signal is None
    assert result.state.awareness_at is None


@pytest.mark.parametrize("changes", [{"grade": 5}, {"outcome": "Fatal"}, {"outcome": " died "}])
def test_grade_5_or_fatal_outcome_implies_death(changes: dict[str, Any]) -> None:
    assert "death" in criteria_of(ae(**changes))


def test_recovered_outcome_does_not_imply_death() -> None:
    assert criteria_of(ae(outcome="Recovered", grade=4)) == frozenset()


def test_serious_true_without_criteria_is_reported_serious_and_flagged() -> None:
    [result] = fold(ae(serious=True))
    assert result.state.criteria == {"reported_serious"}
    assert result.signal is SaeSignalKind.DETECTED
    assert any("without any seriousness criterion" in flag for flag in result.flags)


def test_serious_false_with_a_criterion_is_still_serious_and_flagged() -> None:
    [result] = fold(ae(serious=False, seriousness={"hospitalization": True}))
    assert result.state.serious
    assert any(flag.startswith("serious=false") for flag in result.flags)


def test_seriousness_is_never_downgraded() -> None:
    _, second = fold(ae(1, seriousness={"hospitalization": True}), ae(2, serious=False))
    assert second.state.serious
    assert second.state.criteria == {"hospitalization"}
    assert second.signal is None


def test_clock_starts_at_site_awareness() -> None:
    [result] = fold(ae(seriousness={"life_threatening": True}, awareness_at=AWARE))
    assert result.state.awareness_at == AWARE
    assert result.state.awareness_basis is AwarenessBasis.SITE
    assert result.state.first_serious_version == 1


def test_clock_falls_back_to_receipt_never_processing_time() -> None:
    result = assess_ae(None, ae(seriousness={"hospitalization": True}), received_at=RECEIVED)
    assert result.state.awareness_at == RECEIVED
    assert result.state.awareness_basis is AwarenessBasis.RECEIPT


def test_clock_starts_at_the_version_that_became_serious() -> None:
    later = AWARE + timedelta(hours=2)  # still before we received version 2
    first, second = fold(ae(1, awareness_at=AWARE), ae(2, seriousness={"hospitalization": True}, awareness_at=later))
    assert first.signal is None
    assert second.signal is SaeSignalKind.DETECTED
    assert second.state.awareness_at == later
    assert second.state.first_serious_version == 2


def test_clock_does_not_restart_on_follow_up() -> None:
    _, second = fold(
        ae(1, seriousness={"hospitalization": True}, awareness_at=AWARE),
        ae(2, grade=4, seriousness={"hospitalization": True}, awareness_at=AWARE + timedelta(days=3)),
    )
    assert second.state.awareness_at == AWARE
    assert second.state.first_serious_version == 1


@pytest.mark.parametrize(
    "follow_up",
    [
        {"grade": 3, "seriousness": {"hospitalization": True}},
        {"grade": 2, "seriousness": {"hospitalization": True, "disability": True}},
        {"grade": 2, "outcome": "Fatal"},
    ],
)
def test_worse_follow_up_is_an_update(follow_up: dict[str, Any]) -> None:
    _, second = fold(ae(1, seriousness={"hospitalization": True}), ae(2, **follow_up))
    assert second.signal is SaeSignalKind.UPDATED


def test_identical_follow_up_signals_nothing() -> None:
    same = {"seriousness": {"hospitalization": True}, "outcome": "Recovering"}
    _, second = fold(ae(1, **same), ae(2, **same))
    assert second.signal is None
    assert second.state.latest_version == 2


def test_lower_grade_follow_up_keeps_the_max_grade() -> None:
    _, second = fold(ae(1, grade=4, seriousness={"hospitalization": True}), ae(2, grade=2))
    assert second.state.max_grade == 4
    assert second.signal is None


def test_out_of_order_versions_keep_the_latest_outcome_and_version() -> None:
    v2 = ae(2, seriousness={"hospitalization": True}, outcome="Recovered")
    v1 = ae(1, seriousness={"hospitalization": True}, outcome="Not recovered")
    first, second = fold(v2, v1)
    assert first.signal is SaeSignalKind.DETECTED
    assert second.state.outcome == "Recovered"
    assert second.state.latest_version == 2
    assert second.signal is None


def test_late_older_version_still_adds_its_criteria() -> None:
    v2 = ae(2, seriousness={"hospitalization": True})
    v1 = ae(1, seriousness={"hospitalization": True, "life_threatening": True})
    _, second = fold(v2, v1)
    assert second.state.criteria == {"hospitalization", "life_threatening"}
    assert second.signal is SaeSignalKind.UPDATED


versions = st.builds(
    lambda version, grade, serious, ticked, outcome: ae(
        version, grade=grade, serious=serious, seriousness=dict.fromkeys(ticked, True), outcome=outcome
    ),
    st.integers(min_value=1, max_value=6),
    st.none() | st.integers(min_value=1, max_value=5),
    st.none() | st.booleans(),
    st.sets(st.sampled_from(CRITERIA), max_size=3),
    st.none() | st.sampled_from(["Fatal", "Recovered", "Recovering"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(versions, min_size=1, max_size=6))
def test_criteria_only_grow_and_serious_stays_serious(sequence: list[AeData]) -> None:
    state: SaeState | None = None
    detections = 0
    for version in sequence:
        result = assess_ae(state, version, received_at=RECEIVED)
        if state is not None:
            # Real criteria only grow; 'reported_serious' stands in only until a real criterion is known.
            assert result.state.criteria - {REPORTED_SERIOUS} >= state.criteria - {REPORTED_SERIOUS}
            assert (result.state.max_grade or 0) >= (state.max_grade or 0)
            assert result.state.latest_version >= state.latest_version
            if state.serious:
                assert result.state.serious
                assert result.state.awareness_at == state.awareness_at
                assert result.signal is not SaeSignalKind.DETECTED
        assert result.state.criteria >= criteria_of(version) - {REPORTED_SERIOUS}
        if result.state.serious:
            assert result.state.awareness_at is not None
        detections += result.signal is SaeSignalKind.DETECTED
        state = result.state
    assert detections == (1 if state is not None and state.serious else 0)


def test_an_older_serious_version_with_earlier_awareness_moves_the_clock_back_and_updates() -> None:
    later = AWARE + timedelta(days=2)
    v2 = ae(2, seriousness={"hospitalization": True}, awareness_at=later)
    v1 = ae(1, seriousness={"hospitalization": True}, awareness_at=AWARE)
    first = assess_ae(None, v2, received_at=later)
    second = assess_ae(first.state, v1, received_at=later + timedelta(hours=1))
    assert (second.state.awareness_at, second.state.awareness_basis) == (AWARE, AwarenessBasis.SITE)
    assert second.state.first_serious_version == 1
    assert second.signal is SaeSignalKind.UPDATED, "notify must hear that the clock started earlier"
    assert second.state.latest_version == 2


def test_an_earlier_receipt_also_moves_the_clock_and_the_basis() -> None:
    first = assess_ae(None, ae(2, seriousness={"hospitalization": True}, awareness_at=RECEIVED), received_at=RECEIVED)
    earlier = RECEIVED - timedelta(hours=5)
    second = assess_ae(first.state, ae(1, seriousness={"hospitalization": True}), received_at=earlier)
    assert (second.state.awareness_at, second.state.awareness_basis) == (earlier, AwarenessBasis.RECEIPT)


def test_later_or_non_serious_awareness_never_moves_the_clock() -> None:
    first = assess_ae(None, ae(2, seriousness={"hospitalization": True}, awareness_at=AWARE), received_at=RECEIVED)
    later = assess_ae(
        first.state, ae(3, seriousness={"hospitalization": True}, awareness_at=RECEIVED), received_at=RECEIVED
    )
    assert later.state.awareness_at == AWARE and later.signal is None
    not_serious = ae(1, serious=False, awareness_at=AWARE - timedelta(days=3))
    older = assess_ae(first.state, not_serious, received_at=RECEIVED)
    assert older.state.awareness_at == AWARE, "awareness of a non-serious AE does not start the SAE clock"
