"""Haematological response (pure): dual-test compliance, the transfusion-free period, loss, and their boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.safety.response import (
    Count,
    Transfusion,
    assess_response,
    count_level,
    response_loss,
    unseen_loss,
)
from shared.protocol import ResponseRules, load_protocol

RULES = load_protocol(None).response
assert RULES is not None
T0 = datetime(2026, 4, 1, 8, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def cbc(at: datetime, anc: str = "2.0", plt: str = "150", hgb: str = "120") -> Count:
    values = {"neutrophils": anc, "platelets": plt, "haemoglobin": hgb}
    return Count(at, {k: Decimal(v) for k, v in values.items() if v})


def rules() -> ResponseRules:
    assert RULES is not None
    return RULES


def test_the_shipped_thresholds() -> None:
    r = rules()
    assert (r.confirm_min_hours, r.transfusion_free_days) == (48, 7)
    assert r.lineages["neutrophils"].complete_min == Decimal("1.5")
    assert r.lineages["haemoglobin"].term == "Anemia"


def test_count_levels_at_their_boundaries() -> None:
    r = rules()
    assert count_level(r, cbc(T0, anc="1.5", plt="100", hgb="100"))[:2] == ("complete", True)
    assert count_level(r, cbc(T0, anc="1.49", plt="100", hgb="100"))[0] == "partial"
    assert count_level(r, cbc(T0, anc="1.0", plt="100", hgb="100"))[0] == "none", "1.0 is still severe cytopenia"
    assert count_level(r, cbc(T0, anc="1.01", plt="51", hgb="81"))[0] == "partial"
    assert count_level(r, cbc(T0, anc="2", plt="50", hgb="120"))[:3] == ("none", True, "platelets")
    assert count_level(r, cbc(T0, hgb=""))[1] is False, "a count without haemoglobin cannot qualify"


def test_two_counts_exactly_48_hours_apart_confirm() -> None:
    result = assess_response(rules(), counts=[cbc(T0), cbc(T0 + 48 * H)], transfusions=[], now=T0 + 3 * D)
    assert result.level == "complete"
    assert (result.since, result.confirmed_at) == (T0, T0 + 48 * H)
    assert result.duration_days == Decimal("3.0")


def test_two_counts_one_second_short_of_48_hours_do_not() -> None:
    second = T0 + 48 * H - timedelta(seconds=1)
    result = assess_response(rules(), counts=[cbc(T0), cbc(second)], transfusions=[], now=T0 + 3 * D)
    assert result.level == "none"
    assert (result.awaiting, result.awaiting_since) == ("complete", T0)
    assert "awaiting" in result.reason


def test_a_third_count_confirms_the_run_the_second_could_not() -> None:
    counts = [cbc(T0), cbc(T0 + 24 * H), cbc(T0 + 50 * H)]
    result = assess_response(rules(), counts=counts, transfusions=[], now=T0 + 3 * D)
    assert (result.level, result.since, result.confirmed_at) == ("complete", T0, T0 + 50 * H)


def test_partial_response() -> None:
    counts = [cbc(T0, anc="1.2", plt="60"), cbc(T0 + 2 * D, anc="1.3", plt="70")]
    assert assess_response(rules(), counts=counts, transfusions=[], now=T0 + 2 * D).level == "partial"


def test_a_transfusion_exactly_7_days_before_the_first_count_is_outside_the_free_period() -> None:
    transfused = [Transfusion(T0 - 7 * D, "platelets")]
    result = assess_response(rules(), counts=[cbc(T0), cbc(T0 + 2 * D)], transfusions=transfused, now=T0 + 2 * D)
    assert result.level == "complete"


def test_a_transfusion_on_day_7_less_a_minute_blocks_that_count() -> None:
    transfused = [Transfusion(T0 - 7 * D + timedelta(minutes=1), "red_cells")]
    counts = [cbc(T0), cbc(T0 + 2 * D)]
    result = assess_response(rules(), counts=counts, transfusions=transfused, now=T0 + 2 * D)
    assert result.level == "none", "the first count was propped up by the transfusion"
    # The second count is 9 days after it: it starts a run of its own, confirmed 48 h later.
    later = assess_response(rules(), counts=[*counts, cbc(T0 + 4 * D)], transfusions=transfused, now=T0 + 4 * D)
    assert (later.level, later.since) == ("complete", T0 + 2 * D)


def test_a_transfusion_between_the_two_counts_resets_the_run() -> None:
    transfused = [Transfusion(T0 + D, "platelets")]
    result = assess_response(rules(), counts=[cbc(T0), cbc(T0 + 2 * D)], transfusions=transfused, now=T0 + 3 * D)
    assert result.level == "none"


def test_products_the_protocol_does_not_count_are_ignored() -> None:
    r = rules().model_copy(update={"transfusion_products": ["red_cells", "platelets"]})
    result = assess_response(
        r, counts=[cbc(T0), cbc(T0 + 2 * D)], transfusions=[Transfusion(T0 + D, "other")], now=T0 + 2 * D
    )
    assert result.level == "complete"


def test_a_lone_low_result_ends_a_response_and_a_complete_one_falls_to_partial() -> None:
    counts = [cbc(T0, anc="1.2", plt="120"), cbc(T0 + 2 * D, anc="1.2", plt="120"), cbc(T0 + 3 * D)]
    counts += [cbc(T0 + 5 * D)]  # CR from day 3, confirmed day 5
    held = assess_response(rules(), counts=counts, transfusions=[], now=T0 + 6 * D)
    assert (held.level, held.since) == ("complete", T0 + 3 * D)
    dip = Count(T0 + 6 * D, {"neutrophils": Decimal("1.4")})  # an ANC alone, below CR, above PR
    fallen = assess_response(rules(), counts=[*counts, dip], transfusions=[], now=T0 + 6 * D)
    assert (fallen.level, fallen.since) == ("partial", T0), "the PR that began on day 0 still holds"
    loss = response_loss(
        previous_level="complete",
        previous_since=held.since,
        previous_confirmed_at=held.confirmed_at,
        current=fallen,
        now=T0 + 7 * D,
    )
    assert loss is not None
    assert (loss.level, loss.lost_at, loss.duration_days) == ("partial", T0 + 6 * D, Decimal("3.0"))
    assert "neutrophils 1.4" in loss.reason


def test_a_transfusion_after_confirmation_loses_the_response() -> None:
    counts = [cbc(T0), cbc(T0 + 2 * D)]
    held = assess_response(rules(), counts=counts, transfusions=[], now=T0 + 3 * D)
    lost = assess_response(
        rules(), counts=counts, transfusions=[Transfusion(T0 + 10 * D, "red_cells")], now=T0 + 11 * D
    )
    assert lost.level == "none"
    loss = response_loss(
        previous_level=held.level,
        previous_since=held.since,
        previous_confirmed_at=held.confirmed_at,
        current=lost,
        now=T0 + 11 * D,
    )
    assert loss is not None
    assert (loss.lost_at, loss.duration_days) == (T0 + 10 * D, Decimal("10.0"))
    assert "red cells transfusion" in loss.reason


def test_no_loss_when_the_level_holds_or_rises() -> None:
    held = assess_response(rules(), counts=[cbc(T0), cbc(T0 + 2 * D)], transfusions=[], now=T0 + 3 * D)
    kept = {"previous_since": T0, "previous_confirmed_at": T0 + 2 * D, "current": held, "now": T0 + 3 * D}
    assert response_loss(previous_level="complete", **kept) is None
    assert response_loss(previous_level="partial", **kept) is None


def test_data_after_now_is_not_used() -> None:
    result = assess_response(rules(), counts=[cbc(T0), cbc(T0 + 2 * D)], transfusions=[], now=T0 + 2 * D - H)
    assert result.level == "none"


def test_the_second_example_protocol_has_other_values() -> None:
    from importlib import resources

    from shared.protocol import parse_protocol

    text = resources.files("shared.protocols").joinpath("example-3plus3-dose-levels.yaml").read_text()
    other = parse_protocol(text).response
    assert other is not None
    assert (other.confirm_min_hours, other.transfusion_free_days, sorted(other.lineages)) == (72, 14, ["anc", "plt"])
    two_days = [
        Count(T0, {"anc": Decimal(2), "plt": Decimal(100)}),
        Count(T0 + 2 * D, {"anc": Decimal(2), "plt": Decimal(100)}),
    ]
    assert assess_response(other, counts=two_days, transfusions=[], now=T0 + 3 * D).level == "none", "72 h needed"


def test_a_response_confirmed_and_ended_between_two_assessments_is_a_loss_signalled_once() -> None:
    """CR from day 0, confirmed at day 2, ended by a red-cell transfusion on day 10: an assessment that never held
    the CR (its counts and the transfusion came together) still finds the loss, once."""
    counts = [cbc(T0), cbc(T0 + 2 * D)]
    given = [Transfusion(T0 + 10 * D, "red_cells")]
    current = assess_response(rules(), counts=counts, transfusions=given, now=T0 + 11 * D)
    assert current.level == "none"
    loss = unseen_loss(current, signalled_since=None)
    assert loss is not None
    assert (loss.previous_level, loss.previous_since, loss.lost_at) == ("complete", T0, T0 + 10 * D)
    assert unseen_loss(current, signalled_since=T0) is None, "already signalled"
