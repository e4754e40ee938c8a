"""Pure: the obligations notify tracks, their deadlines, who is reminded, and which transitions exist.

open -> overdue (the timer at the deadline persists it) -> completed (with the filed report's reference)
or cancelled (with a reason). Only completion or cancellation stops an obligation's clock; acknowledging
or snoozing the alert never does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.clock import utc
from shared.protocol import Protocol

SAE_REPORT = "sae_report"
DLT_REVIEW = "dlt_review"
STOPPING_RULE_REVIEW = "stopping_rule_review"
SUSAR_REPORTS = frozenset({"susar_report", "susar_completion", "susar_follow_up"})
DOSE_RECOMMENDATION_REVIEW = "dose_recommendation_review"
DEVIATION_REVIEW = "deviation_review"
LAB_REVIEW = "lab_review"
ACUTE_REACTION_REVIEW = "acute_reaction_review"
OPEN_STATES = frozenset({"open", "overdue"})
CLOSED_STATES = frozenset({"completed", "cancelled"})


class ObligationConflict(ValueError):
    """A transition that the obligation's current state does not allow (e.g. completing a cancelled one)."""


def deadline(clock_started_at: datetime, hours: int) -> datetime:
    return utc(clock_started_at) + timedelta(hours=hours)


def reminded_roles(protocol: Protocol, kind: str) -> list[str]:
    """Who hears the reminders and overdue pages of an obligation, by kind."""
    if kind == SAE_REPORT:
        return list(protocol.sae.notify_roles)
    if kind in (DLT_REVIEW, STOPPING_RULE_REVIEW, DOSE_RECOMMENDATION_REVIEW, DEVIATION_REVIEW):
        return list(protocol.dlt.notify_roles)
    if kind in SUSAR_REPORTS:
        rules = protocol.expedited_reporting
        return list(rules.notify_roles) if rules is not None else list(protocol.sae.notify_roles)
    if kind == LAB_REVIEW:
        return list(protocol.lab_alerts.notify_roles)
    if kind == ACUTE_REACTION_REVIEW:
        acute = protocol.acute_reactions
        return list(acute.notify_roles) if acute is not None else list(protocol.sae.notify_roles)
    raise ValueError(f"unknown obligation kind {kind!r}")


def label(kind: str) -> str:
    return {
        SAE_REPORT: "SAE report",
        DLT_REVIEW: "DLT review",
        STOPPING_RULE_REVIEW: "stopping-rule review",
        "susar_report": "SUSAR report",
        "susar_completion": "SUSAR completion report",
        "susar_follow_up": "SUSAR follow-up report",
        DOSE_RECOMMENDATION_REVIEW: "recommended-dose review",
        DEVIATION_REVIEW: "protocol-deviation review",
        LAB_REVIEW: "lab toxicity review",
        ACUTE_REACTION_REVIEW: "acute reaction review",
    }.get(kind, kind.replace("_", " "))


def check_can_close(state: str, *, to: str) -> None:
    if state in CLOSED_STATES:
        raise ObligationConflict(f"the obligation is already {state}; it cannot become {to}")


def is_late(*, due_at: datetime, at: datetime) -> bool:
    return utc(at) > utc(due_at)
