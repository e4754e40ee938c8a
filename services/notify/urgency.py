"""Pure: how urgent a queued message is, so pages never wait behind bulk mail, nor the gravest behind other pages.

- CRITICAL: every message about an SAE, a SUSAR, a DLT, a stopping rule, an acute infusion reaction or a
  dead-lettered event, whatever queued it (first page, escalation, reminder, overdue page, failover). A backfill
  of a cytopenic population queues lab-toxicity pages by the hundred; an SAE's page queued behind them waited
  7 s for them to be handed over. So is the first page of a lab toxicity raised by a result a site entered on its
  own during such a backfill (it came on the signals topic, not the routine lane): it waited 8.6 s behind the
  backfill's lab pages, which are PAGEs.
- PAGE: any other alert with a deadline someone must meet (its first page, escalation steps, reminders,
  overdue pages, failovers).
- NOTICE: other single notices (a lab toxicity, a cohort decision), and their failovers.
- DIGEST: low-urgency notices (missed assessments, protocol deviations), and their failovers to the next
  tier, held for a short window and sent as one mail per recipient listing them all: after a long SMTP
  outage, 2,000 failed notices fail over as a few digests, not as 2,000 pages.

Unknown alert kinds are NOTICEs: a new kind is never silently bundled or delayed. The classes are stored per
delivery and sort most urgent first; CRITICAL is below PAGE (-1), so the rows stored before it keep their meaning.
"""

from __future__ import annotations

CRITICAL = -1
PAGE = 0
NOTICE = 1
DIGEST = 2

CRITICAL_ALERT_KINDS = frozenset({"sae", "dlt", "stopping_rule", "dead_letter", "susar", "acute_reaction"})
PAGED_TIMER_KINDS = frozenset({"escalate", "overdue"})
DIGEST_ALERT_KINDS = frozenset({"assessment_missed", "protocol_deviation"})


def urgency_of(*, alert_kind: str, has_open_obligation: bool, timer_kind: str | None = None) -> int:
    """The dispatch class of one message about an alert of `alert_kind` (queued by `timer_kind`, if any)."""
    if alert_kind in CRITICAL_ALERT_KINDS:
        return CRITICAL
    if timer_kind in PAGED_TIMER_KINDS or has_open_obligation:
        return PAGE
    if alert_kind in DIGEST_ALERT_KINDS:
        return DIGEST
    return NOTICE
