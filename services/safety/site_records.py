"""Storing records a site may re-send (transfusions, samples): the same content is a no-op, other content
corrects the stored row and the audit keeps what it said before. Keyword-only, never commits."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, SQLModel

from services.safety.protocol_engine import AUDIT_SERVICE, SYSTEM_ACTOR
from shared.audit import append_audit
from shared.clock import utc


def save_site_record(
    session: Session,
    *,
    row: SQLModel | None,
    new: SQLModel,
    fields: tuple[str, ...],
    entity: str,
    source_event_id: str,
    now: datetime,
) -> bool:
    """Add `new`, or overwrite `row` when the site's `fields` differ, keeping what it said before in the audit."""
    if row is None:
        session.add(new)
        return True
    before = {f: _comparable(getattr(row, f)) for f in fields}
    after = {f: _comparable(getattr(new, f)) for f in fields}
    if before == after:
        return False
    for name in fields:
        setattr(row, name, getattr(new, name))
    session.add(row)
    changed = [f for f in fields if before[f] != after[f]]
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=SYSTEM_ACTOR,
        action=f"{entity.split('/', 1)[0]}.corrected",
        entity=entity,
        detail={
            "before": {f: before[f] for f in changed},
            "after": {f: after[f] for f in changed},
            "source_event_id": source_event_id,
        },
        now=now,
    )
    return True


def _comparable(value: object) -> object:
    """Instants in UTC ISO text (the database gives back UTC what the sender wrote with its own offset)."""
    return utc(value).isoformat() if isinstance(value, datetime) else value
