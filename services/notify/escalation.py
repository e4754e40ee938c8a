"""Pure: when pages, reminders and overdue repeats fall due, and who each one goes to.

Deadlines are exact: aware UTC datetimes plus timedeltas built from integer minutes or from Decimal
hours converted to whole microseconds; no float seconds anywhere, and no arithmetic that can overflow
(an offset larger than the time left is compared as an integer before a timedelta is built).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from shared.clock import utc
from shared.protocol import EscalationPolicy, Protocol

WEBHOOK_PREFIX = "webhook:"
OVERDUE_AFTER = timedelta(microseconds=1)
"""An obligation is overdue once `now > due_at`; its overdue timer is due at the first instant after."""

MICROSECONDS_PER_HOUR = 3_600_000_000
Channel = Literal["email", "webhook"]
EscalationAction = Literal["page", "defer", "skip"]


@dataclass(frozen=True, order=True)
class Recipient:
    channel: Channel
    address: str  # an e-mail address, or webhook:<name>


@dataclass(frozen=True)
class Reminder:
    number: int  # 0 for the earliest
    hours_before: Decimal
    at: datetime


def hours_to_timedelta(hours: Decimal) -> timedelta:
    """Decimal hours as a timedelta, exact to the microsecond (truncated below that)."""
    micro = int((hours * MICROSECONDS_PER_HOUR).to_integral_value(rounding=ROUND_FLOOR))
    return timedelta(microseconds=micro)


def _micro(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def reminder_instants(*, deadline: datetime, hours_before: Iterable[Decimal], after: datetime) -> list[Reminder]:
    """Reminders counted back from the deadline, strictly after `after` (the moment of scheduling).

    Non-positive offsets are not reminders (one at or past the deadline is the overdue page) and are
    dropped; equal offsets collapse to one; the result is in time order, every instant before the deadline.
    """
    deadline, after = utc(deadline), utc(after)
    room = _micro(deadline - after)
    offsets = sorted({h for h in hours_before if h > 0}, reverse=True)
    kept = [h for h in offsets if (h * MICROSECONDS_PER_HOUR).to_integral_value(rounding=ROUND_FLOOR) < room]
    instants = [(h, deadline - hours_to_timedelta(h)) for h in kept]
    instants = [(h, at) for h, at in instants if after < at < deadline]
    return [Reminder(number=i, hours_before=h, at=at) for i, (h, at) in enumerate(instants)]


def overdue_at(deadline: datetime) -> datetime:
    return utc(deadline) + OVERDUE_AFTER


def next_overdue_repeat(*, deadline: datetime, repeat_minutes: int, fired: int, now: datetime) -> tuple[int, datetime]:
    """The next overdue repeat after repeat number `fired` (0 = the first overdue page): number and instant.

    Repeats sit on a fixed grid (deadline + n x repeat) so they never drift; repeats missed while the
    notifier was down are not replayed one by one: the next one is the first grid point after `now`.
    """
    if repeat_minutes < 1:
        raise ValueError("overdue_repeat_minutes must be at least 1")
    if fired < 0:
        raise ValueError("repeat numbers start at 0")
    deadline, now = utc(deadline), utc(now)
    step = timedelta(minutes=repeat_minutes)
    elapsed = _micro(now - deadline)
    first_after_now = elapsed // _micro(step) + 1 if elapsed >= 0 else 1
    number = max(fired + 1, first_after_now)
    return number, deadline + step * number


def next_step_at(policy: EscalationPolicy, *, step: int, paged_at: datetime) -> tuple[int, datetime] | None:
    """After step `step` was paged at `paged_at`, the next step and when it pages if nobody acknowledges."""
    if step + 1 >= len(policy.steps):
        return None
    return step + 1, utc(paged_at) + timedelta(minutes=policy.steps[step].wait_minutes)


def escalation_action(*, alert_state: str, snoozed_until: datetime | None, now: datetime) -> EscalationAction:
    """Acknowledging (or resolving) stops paging; a snooze only postpones it until it expires."""
    if alert_state != "open":
        return "skip"
    if snoozed_until is not None and utc(now) < utc(snoozed_until):
        return "defer"
    return "page"


def overdue_tier(policy: EscalationPolicy, *, paged_step: int) -> int:
    """Each overdue page climbs one tier above the highest step paged so far (which earlier overdue pages
    raised already), up to the last tier."""
    return min(paged_step + 1, len(policy.steps) - 1)


def failover_recipients(
    protocol: Protocol, *, paged_step: int, failed_to: str
) -> tuple[int, tuple[Recipient, ...]] | None:
    """The first tier above those paged that has someone other than the address that failed; None: none left."""
    for tier in range(paged_step + 1, len(protocol.escalation.steps)):
        recipients = tuple(r for r in resolve_targets(protocol, step_targets(protocol, tier)) if r.address != failed_to)
        if recipients:
            return tier, recipients
    return None


def resolve_targets(protocol: Protocol, targets: Iterable[str]) -> tuple[Recipient, ...]:
    """Roles become their contacts' addresses; e-mail addresses and webhook:<name> stand for themselves."""
    found: set[Recipient] = set()
    for target in targets:
        if target.startswith(WEBHOOK_PREFIX):
            found.add(Recipient("webhook", target))
        elif "@" in target:
            found.add(Recipient("email", target))
        else:
            found.update(Recipient("email", c.email) for c in protocol.contacts_with_role(target))
    return tuple(sorted(found))


def step_targets(protocol: Protocol, step: int) -> list[str]:
    return list(protocol.escalation.steps[step].targets)


def initial_targets(protocol: Protocol, roles: Sequence[str], *, escalates: bool) -> list[str]:
    """The first notification IS escalation step 0: the signal's roles plus step 0's targets (once each)."""
    return [*roles, *step_targets(protocol, 0)] if escalates else list(roles)


def webhook_names(protocol: Protocol) -> set[str]:
    """Every webhook the protocol's escalation steps name; each must be configured before notify starts."""
    return {
        target.removeprefix(WEBHOOK_PREFIX)
        for step in protocol.escalation.steps
        for target in step.targets
        if target.startswith(WEBHOOK_PREFIX)
    }
