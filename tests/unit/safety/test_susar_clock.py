"""The SUSAR clock as a function of what the sponsor knew and when (pure): the same versions and assessments in any
processing order give the same day 0, the same 7- or 15-day classification and the same upgrade instant; what
changed since the last signal is one signal (detected, clock_earlier, upgraded, follow_up, withdrawn)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from services.safety.expedited.expectedness import Expectedness
from services.safety.expedited.susar import (
    Assessment,
    SusarClock,
    VersionFacts,
    decide,
    facts_at,
    standing,
)

DAY0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HOSP = frozenset({"hospitalization"})
FATAL = frozenset({"hospitalization", "death"})


def day(n: float) -> datetime:
    return DAY0 + timedelta(days=n)


def propose(term: str, _code: str | None, grade: int | None, fatal: bool) -> Expectedness:
    """A small RSI: Fever expected up to grade 2 and never fatal; anything else not listed."""
    if term == "Fever":
        return "unexpected" if fatal or grade is None or grade > 2 else "expected"
    return "unexpected"


def version(
    n: int,
    received: float,
    *,
    criteria: frozenset[str] = HOSP,
    grade: int | None = 3,
    relatedness: str | None = "possible",
    term: str = "Pneumonitis",
) -> VersionFacts:
    return VersionFacts(
        version=n,
        received_at=day(received),
        event_id=f"evt-{n}",
        criteria=criteria,
        grade=grade,
        relatedness=relatedness,
        term=term,
        meddra_code=None,
    )


def pneumonitis() -> list[VersionFacts]:
    """v1 day 9 grade 2 not serious; v2 day 10 hospitalised; v3 day 12 fatal (the physician's case)."""
    return [
        version(1, 9, criteria=frozenset(), grade=2),
        version(2, 10),
        version(3, 12, criteria=FATAL, grade=5),
    ]


def replay(versions: Sequence[VersionFacts], assessments: Sequence[Assessment] = ()) -> SusarClock:
    """What safety stores after processing the versions one by one in the given order."""
    clock = SusarClock()
    for i in range(1, len(versions) + 1):
        clock = decide(clock, standing(versions[:i], assessments, propose=propose)).clock
    return clock


def test_day0_is_the_receipt_of_the_version_that_made_it_a_susar_and_the_upgrade_when_it_became_fatal() -> None:
    now = standing(pneumonitis(), (), propose=propose)
    assert now.susar and now.facts.fatal_or_life_threatening
    assert now.clock_start == day(10) and now.clock_basis == "sponsor receipt of AE version 2 (event evt-2)"
    assert now.upgraded_at == day(12), "the 7-day clock runs from the knowledge that it was fatal"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_processing_order_ends_in_the_clock_of_the_receipt_order(order: tuple[int, ...]) -> None:
    versions = pneumonitis()
    in_order = replay(versions)
    assert (in_order.clock_start, in_order.upgraded_at, in_order.signalled_version) == (day(10), day(12), 3)
    assert replay([versions[i] for i in order]) == in_order


def test_fatal_in_the_version_that_made_it_a_susar_is_a_7_day_case_from_day_0_not_an_upgrade() -> None:
    versions = [version(1, 9, criteria=frozenset(), grade=2), version(2, 11, criteria=FATAL, grade=5)]
    now = standing(versions, (), propose=propose)
    assert (now.clock_start, now.upgraded_at, now.facts.fatal_or_life_threatening) == (day(11), None, True)


def test_the_fatal_v3_processed_first_then_the_hospitalised_v2_moves_day_0_earlier() -> None:
    """The fatal v3 (day 12) alone starts a 7-day clock on day 12; the v2 received on day 10, processed after it,
    moves day 0 to day 10 and keeps the 7-day clock at day 12: one `clock_earlier`, no second detection."""
    v1, v2, v3 = pneumonitis()
    first = decide(SusarClock(), standing([v1, v3], (), propose=propose))
    assert first.change == "detected"
    assert (first.clock.clock_start, first.clock.fatal_or_life_threatening, first.clock.upgraded_at) == (
        day(12),
        True,
        None,
    )
    late = decide(first.clock, standing([v1, v3, v2], (), propose=propose))
    assert late.change == "clock_earlier"
    assert (late.clock.clock_start, late.clock.upgraded_at) == (day(10), day(12))
    assert "day 0 now" in late.reason and "processed late" in late.reason
    assert decide(late.clock, standing([v1, v3, v2], (), propose=propose)).change is None, "a replay says nothing"


def test_a_late_version_that_makes_the_upgrade_known_earlier_moves_the_7_day_clock() -> None:
    """v2 hospitalised (day 10), v4 fatal (day 14) processed, then v3 fatal (day 12): fatal known since day 12."""
    v2, v3, v4 = version(2, 10), version(3, 12, criteria=FATAL, grade=5), version(4, 14, criteria=FATAL, grade=5)
    before = replay([v2, v4])
    assert (before.clock_start, before.upgraded_at) == (day(10), day(14))
    late = decide(before, standing([v2, v4, v3], (), propose=propose))
    assert late.change == "clock_earlier" and late.clock.upgraded_at == day(12)


def test_newer_information_in_receipt_order_is_a_follow_up_and_fatal_news_an_upgrade() -> None:
    v2 = version(2, 10)
    detected = decide(SusarClock(), standing([v2], (), propose=propose))
    v3 = version(3, 11, grade=4)
    follow = decide(detected.clock, standing([v2, v3], (), propose=propose))
    assert follow.change == "follow_up" and follow.clock.clock_start == day(10)
    v4 = version(4, 12, criteria=FATAL, grade=5)
    upgraded = decide(follow.clock, standing([v2, v3, v4], (), propose=propose))
    assert upgraded.change == "upgraded" and upgraded.clock.upgraded_at == day(12)


def test_an_older_version_processed_late_that_changes_nothing_is_not_a_follow_up() -> None:
    v2, v3 = version(2, 10), version(3, 11, grade=4)
    after_v3 = decide(SusarClock(), standing([v3], (), propose=propose)).clock
    assert after_v3.clock_start == day(11)
    late = decide(after_v3, standing([v3, v2], (), propose=propose))
    assert late.change == "clock_earlier", "v2 was received first: day 0 is its receipt"
    v2_after = version(2, 12)  # received after v3 (the site sent them out of order): older news, no new day 0
    quiet = decide(after_v3, standing([v3, v2_after], (), propose=propose))
    assert quiet.change is None and quiet.clock == after_v3


def test_the_site_withdrawing_causality_in_between_starts_a_new_stretch_whatever_the_order() -> None:
    """Related (day 10), not related (day 11), related again (day 13): day 0 is day 13, as in order. Processed
    v2, v4, then v3: safety had signalled day 10; it withdraws that stretch and detects the new one."""
    v2, v3, v4 = version(2, 10), version(3, 11, relatedness="unlikely"), version(4, 13)
    in_order = replay([v2, v3, v4])
    assert in_order.clock_start == day(13)
    for order in itertools.permutations([v2, v3, v4]):
        assert replay(list(order)) == in_order
    after = replay([v2, v4])
    assert after.clock_start == day(10)
    gap = decide(after, standing([v2, v4, v3], (), propose=propose))
    assert gap.change == "detected" and gap.clock.clock_start == day(13)


def test_a_follow_up_that_leaves_causality_unrelated_withdraws() -> None:
    v2, v3 = version(2, 10), version(3, 11, relatedness="not_related")
    detected = decide(SusarClock(), standing([v2], (), propose=propose))
    withdrawn = decide(detected.clock, standing([v2, v3], (), propose=propose))
    assert withdrawn.change == "withdrawn" and not withdrawn.clock.susar and withdrawn.clock.clock_start is None


def test_the_sponsors_causality_starts_the_clock_at_the_decision_and_a_re_assessment_keeps_it() -> None:
    site_unlikely = [version(1, 10, relatedness="unlikely")]
    related = Assessment("causality", "related", day(12), "sponsor causality assessment (related) by officer")
    now = standing(site_unlikely, [related], propose=propose)
    assert now.clock_start == day(12) and now.clock_basis == related.basis
    again = Assessment("causality", "related", day(20), "sponsor causality assessment (related) by officer")
    assert standing(site_unlikely, [related, again], propose=propose).clock_start == day(12)
    late_site = version(2, 11, relatedness="probable")  # the site's 'probable', received day 11, processed later
    assert standing([*site_unlikely, late_site], [related, again], propose=propose).clock_start == day(11)


def test_a_superseded_expected_confirmation_keeps_its_time_so_day_0_is_not_backdated() -> None:
    """Pneumonitis is not in the RSI (unexpected) but the officer confirmed 'expected' on day 11; a grade 4
    received on day 30 voids the confirmation. Day 0 is day 30, not the day-10 receipt (which would make the
    case overdue at once although the sponsor had decided it was not reportable)."""
    v1, v2 = version(1, 10), version(2, 30, grade=4)
    confirmed = Assessment("expectedness", "expected", day(11), "sponsor expectedness assessment (expected) by o")
    assert not standing([v1], [confirmed], propose=propose).susar
    voided = Assessment("expectedness", None, day(30), "new facts in AE version 2")
    now = standing([v1, v2], [confirmed, voided], propose=propose)
    assert now.susar and now.clock_start == day(30)


def test_an_unexpected_override_starts_the_clock_at_the_decision() -> None:
    fever = [version(1, 10, grade=2, term="Fever")]
    assert not standing(fever, (), propose=propose).susar, "Fever grade 2 is expected per the RSI"
    override = Assessment("expectedness", "unexpected", day(11), "sponsor expectedness assessment (unexpected) by o")
    assert standing(fever, [override], propose=propose).clock_start == day(11)


def test_knowledge_at_an_instant_is_the_latest_version_received_by_then() -> None:
    v1, v2, v3 = pneumonitis()
    at_11 = facts_at([v3, v1, v2], (), at=day(11), propose=propose)
    assert (at_11.ae_version, sorted(at_11.criteria), at_11.susar) == (2, ["hospitalization"], True)
    assert facts_at([v3, v1, v2], (), at=day(9), propose=propose).susar is False


def test_two_versions_received_at_the_same_instant_are_known_together() -> None:
    v2, v3 = version(2, 10), version(3, 10, criteria=FATAL, grade=5)
    now = standing([v3, v2], (), propose=propose)
    assert (now.clock_start, now.upgraded_at) == (day(10), None), "fatal known from day 0: a 7-day case"
    assert now.clock_basis == "sponsor receipt of AE version 2 (event evt-2)"
