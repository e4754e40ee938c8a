"""Pure: the shape shared by informational alerts (a data-quality finding, a lost response, a missed sample):
one alert per thread, notified once, no clock, addressed to the site's own contacts or, failing those, to a
fallback group, so a notice is never addressed to no one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from services.notify.escalation import Recipient
from services.notify.sae_alerts import AlertPlan, MessagePlan
from shared.events import deterministic_id
from shared.protocol import Protocol


def site_recipients(
    protocol: Protocol, roles: Iterable[str], site_id: str, *, fallback_roles: Sequence[str]
) -> tuple[Recipient, ...]:
    """The contacts with `roles` (those listing `sites` only for their sites); if none, all `fallback_roles`."""
    found = {
        Recipient("email", c.email)
        for role in roles
        for c in protocol.contacts_with_role(role)
        if not c.sites or site_id in c.sites
    }
    if not found:
        found = {Recipient("email", c.email) for r in fallback_roles for c in protocol.contacts_with_role(r)}
    return tuple(sorted(found))


def notice_plan(*, thread_key: str, title: str, data: BaseModel, messages: tuple[MessagePlan, ...]) -> AlertPlan:
    """An alert without an obligation (so it does not escalate), showing the signal's data."""
    return AlertPlan(
        alert_id=deterministic_id("alert", thread_key),
        thread_key=thread_key,
        title=title[:500],
        details=data.model_dump(mode="json"),
        obligation=None,
        messages=messages,
    )
