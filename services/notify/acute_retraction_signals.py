"""Notify's service layer for an acute reaction whose AE the site took back (`acute_reaction.withdrawn`).

Its open review is cancelled (recorded with why), escalation and failover stop, pages not yet handed over are not
sent, and whoever was paged hears once that no review is owed: the same steps as an SAE's withdrawal
(`sae_retraction_signals`), without a report to speak of. A restore comes back as `acute_reaction.detected`, which
re-pages the alert and opens a new review (`signals._open_or_worsen`).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.notify import store
from services.notify.acute_reaction_alerts import acute_thread, acute_withdrawn_mail
from services.notify.obligations import ACUTE_REACTION_REVIEW
from services.notify.sae_alerts import messages_to
from services.notify.sae_retraction import SYSTEM, paged_recipients, retraction_words
from services.notify.sae_retraction_signals import cancel_reviews, sent_messages, stop_paging
from shared.events import AcuteReactionWithdrawn

ACUTE_WITHDRAWN = "acute_reaction_withdrawn"


def apply_acute_withdrawn(session: Session, signal: AcuteReactionWithdrawn, now: datetime) -> None:
    data = signal.data
    alert = store.find_alert_by_thread(session, thread_key=acute_thread(signal.trialid, data.subject_id, data.ae_id))
    if alert is None:
        return  # never paged here: nothing to withdraw
    words = retraction_words(data)
    why = f"acute reaction withdrawn: {words}; no review is needed for it"
    reviews = cancel_reviews(session, alert, kind=ACUTE_REACTION_REVIEW, reason=why, now=now)
    unsent = stop_paging(session, alert.id, why=f"acute reaction withdrawn ({words})", now=now)
    paged = paged_recipients(sent_messages(session, alert.id, now)) if reviews else ()
    notices = messages_to(signal.id, paged, acute_withdrawn_mail(signal.trialid, data))
    store.queue_messages(session, alert_id=alert.id, messages=notices, now=now)
    alert.updated_at = now
    session.add(alert)
    told = ", ".join(r.address for r in paged) if notices else "nobody (no review was open, or no page had gone out)"
    store.record(
        session,
        alert_id=alert.id,
        actor=SYSTEM,
        action=ACUTE_WITHDRAWN,
        detail=f"acute reaction withdrawn: {words}; told {told}"
        + (f"; {unsent} page(s) not yet sent withdrawn" if unsent else ""),
        now=now,
        source_event_id=data.source_event_id,
        status=data.status,
        changed_at=data.changed_at.isoformat(),
        obligations_cancelled=[o.id for o in reviews],
        unsent_withdrawn=unsent,
    )
