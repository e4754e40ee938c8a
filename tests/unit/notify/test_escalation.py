"""Pure escalation arithmetic: reminder instants, overdue repeats, steps, targets; exact and overflow-free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notify import escalation
from services.notify.escalation import Recipient
from shared.protocol import EscalationPolicy, EscalationStep, Protocol

DEADLINE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MOMENTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
HOURS = st.decimals(min_value=Decimal("-1000"), max_value=Decimal("1e12"), places=4, allow_nan=False)


def test_default_reminders_are_12_4_and_1_hour_before() -> None:
    reminders = escalation.reminder_instants(
        deadline=DEADLINE, hours_before=[Decimal(12), Decimal(4), Decimal(1)], after=DEADLINE - timedelta(hours=24)
    )
    assert [r.at for r in reminders] == [DEADLINE - timedelta(hours=h) for h in (12, 4, 1)]
    assert [r.number for r in reminders] == [0, 1, 2]


def test_fractional_hours_are_exact() -> None:
    [reminder] = escalation.reminder_instants(
        deadline=DEADLINE, hours_before=[Decimal("0.25")], after=DEADLINE - timedelta(hours=1)
    )
    assert reminder.at == DEADLINE - timedelta(minutes=15)
    assert escalation.hours_to_timedelta(Decimal("1e-10")) == timedelta(0), "below a microsecond: truncated"


def test_a_huge_offset_does_not_overflow() -> None:
    after = DEADLINE - timedelta(hours=24)
    assert escalation.reminder_instants(deadline=DEADLINE, hours_before=[Decimal("1e30")], after=after) == []


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        escalation.reminder_instants(deadline=datetime(2026, 3, 2), hours_before=[Decimal(1)], after=DEADLINE)


@given(deadline=MOMENTS, lead=st.integers(min_value=0, max_value=10**7), offsets=st.lists(HOURS, max_size=8))
def test_reminder_instants_are_ordered_strictly_inside_the_window(
    deadline: datetime, lead: int, offsets: list[Decimal]
) -> None:
    after = deadline - timedelta(minutes=lead)
    reminders = escalation.reminder_instants(deadline=deadline, hours_before=offsets, after=after)
    instants = [r.at for r in reminders]
    assert instants == sorted(set(instants)), "strictly increasing"
    for reminder in reminders:
        assert after < reminder.at < deadline
        assert reminder.hours_before > 0, "never a negative (or zero) offset"
        assert deadline - reminder.at == escalation.hours_to_timedelta(reminder.hours_before)
    window = (deadline - after) // timedelta(microseconds=1)
    inside = {int(h * 3_600_000_000) for h in offsets if 0 < h * 3_600_000_000 < window}
    assert len(reminders) == len(inside - {0}), "every offset inside the window gives exactly one reminder"


@given(
    deadline=MOMENTS,
    repeat=st.integers(min_value=1, max_value=7 * 24 * 60),
    fired=st.integers(min_value=0, max_value=500),
    elapsed=st.integers(min_value=-(10**6), max_value=10**8),
)
def test_overdue_repeats_stay_on_the_grid_and_after_now(
    deadline: datetime, repeat: int, fired: int, elapsed: int
) -> None:
    now = deadline + timedelta(seconds=elapsed)
    number, at = escalation.next_overdue_repeat(deadline=deadline, repeat_minutes=repeat, fired=fired, now=now)
    assert number > fired
    assert at > now
    assert at == deadline + timedelta(minutes=repeat) * number
    assert number == fired + 1 or at - timedelta(minutes=repeat) <= now, "no grid point skipped that is still ahead"


def test_overdue_is_the_first_instant_after_the_deadline() -> None:
    assert escalation.overdue_at(DEADLINE) == DEADLINE + timedelta(microseconds=1)


def test_steps_wait_and_stop_after_the_last() -> None:
    policy = EscalationPolicy(steps=[EscalationStep(targets=["a"], wait_minutes=30), EscalationStep(targets=["b"])])
    assert escalation.next_step_at(policy, step=0, paged_at=DEADLINE) == (1, DEADLINE + timedelta(minutes=30))
    assert escalation.next_step_at(policy, step=1, paged_at=DEADLINE) is None
    assert escalation.overdue_tier(policy, paged_step=0) == 1
    assert escalation.overdue_tier(policy, paged_step=1) == 1


@pytest.mark.parametrize(
    ("state", "snoozed", "expected"),
    [
        ("open", None, "page"),
        ("open", DEADLINE + timedelta(seconds=1), "defer"),
        ("open", DEADLINE, "page"),
        ("acknowledged", None, "skip"),
        ("resolved", DEADLINE + timedelta(days=1), "skip"),
    ],
)
def test_escalation_action(state: str, snoozed: datetime | None, expected: str) -> None:
    assert escalation.escalation_action(alert_state=state, snoozed_until=snoozed, now=DEADLINE) == expected


def test_targets_resolve_roles_addresses_and_webhooks(protocol: Protocol) -> None:
    resolved = escalation.resolve_targets(
        protocol, ["safety_officer", "webhook:safety-chat", "safety.officer@sentinel.example", "nobody_has_this_role"]
    )
    assert resolved == (
        Recipient("email", "safety.officer@sentinel.example"),
        Recipient("webhook", "webhook:safety-chat"),
    )


def test_protocol_accepts_named_webhook_targets(protocol: Protocol) -> None:
    from shared.protocol import ProtocolError, parse_protocol

    data = protocol.model_dump(mode="json")
    data["escalation"]["steps"][0]["targets"] = ["safety_officer", "webhook:safety-chat"]
    import yaml

    parsed = parse_protocol(yaml.safe_dump(data))
    assert escalation.webhook_names(parsed) == {"safety-chat"}
    data["escalation"]["steps"][0]["targets"] = ["webhook:"]
    with pytest.raises(ProtocolError, match="needs a name"):
        parse_protocol(yaml.safe_dump(data))
