"""Pure: how urgent a queued message is, so pages never wait behind bulk mail, nor the gravest behind other pages.

- CRITICAL: every message about an SAE, a SUSAR, a DLT, a stopping rule, an acute infusion reaction or a
  dead-lettered event, whatever queued it (first page, escalation, reminder, overdue page, failover). A backfill
  of a cytopenic population queues lab-toxicity pages by the hundred; an SAE's page queued behind them waited
  7 s for them to be handed over.
- LIVE_FINDING: the pages of a lab toxicity raised by a result that came on its own, not in a backfill (its
  signal came on the signals topic, not the routine lane). A grade 4 count a site entered during a backfill
  waited 8.6 s behind the backfill's lab pages (PAGEs); as CRITICAL, a central lab's import of a few hundred
  results (not a backfill) would make an SAE's page wait behind its lab pages.
- PAGE: any other alert with a deadline someone must meet (its first page, escalation steps, reminders,
  overdue pages, failovers).
- NOTICE: other single notices (a lab toxicity, a cohort decision), and their failovers.
- DIGEST: low-urgency notices (missed assessments, protocol deviations), and their failovers to the next
  tier, held for a short window and sent as one mail per recipient listing them all: after a long SMTP
  outage, 2,000 failed notices fail over as a few digests, not as 2,000 pages.

Unknown alert kinds are NOTICEs: a new kind is never silently bundled or delayed. The classes are stored per
delivery and sort most urgent first; the classes above PAGE are below 0, so the rows stored before them keep their
meaning (CRITICAL was -1 until LIVE_FINDING took that place: migration notify_0004_finding renumbered the rows).
"""

from __future__ import annotations

CRITICAL = -2
LIVE_FINDING = -1
PAGE = 0
NOTICE = 1
DIGEST = 2

CRITICAL_ALERT_KINDS = frozenset({"sae", "dlt", "stopping_rule", "dead_letter", "susar", "acute_reaction"})
PAGED_TIMER_KINDS = frozenset({"escalate", "overdue"})
DIGEST_ALERT_KINDS = frozenset({"assessment_missed", "protocol_deviation"})


def urgency_of(*, alert_kind: str, has_open_obligation: bool, timer_kind: str | None = None, live: bool = False) -> int:
    """The dispatch class of one message about an alert of `alert_kind` (queued by `timer_kind`, if any; `live`:
    queued by a signal about a finding a site has just entered)."""
    if alert_kind in CRITICAL_ALERT_KINDS:
        return CRITICAL
    if live and timer_kind is None:
        return LIVE_FINDING
    if timer_kind in PAGED_TIMER_KINDS or has_open_obligation:
        return PAGE
    if alert_kind in DIGEST_ALERT_KINDS:
        return DIGEST
    return NOTICE
