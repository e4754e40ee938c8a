"""A confirmed DLT whose AE the site takes back (entered in error, deleted): the finding for the officer.

The rules never undo an officer's confirmation, so the DLT still counts in its arm's 3+3 tally after the retraction.
A dose-escalation decision must not rest on an event the site says did not happen (to this subject) without a person
knowing: the officers are told, naming the DLT, the AE, the arm and who confirmed it, and how to revise the decision
if the event did not happen (`protocol_engine.decide_dlt`: the arm's 3+3 is then reassessed).
Keyword-only; never commits.
"""

from __future__ import annotations

from sqlmodel import Session

from services.safety import data_quality
from services.safety.dlt import DltState
from services.safety.dlt_decision_basis import decision_on_file
from services.safety.models import DltRecord
from services.safety.protocol_engine import dlt_id_for
from shared.events import RecordStatusChanged
from shared.outbox import Outgoing

CONFIRMED_DLT_AE_RETRACTED = "confirmed_dlt_ae_retracted"
"""The AE behind a confirmed DLT was marked entered in error or deleted: the DLT still counts until reviewed."""


def confirmed_dlt_finding(session: Session, envelope: RecordStatusChanged, *, topic: str) -> list[Outgoing]:
    """Called when the site has just taken an AE back (not on a repeat or a restore)."""
    data = envelope.data
    record = session.get(DltRecord, dlt_id_for(envelope.trialid, envelope.subject, data.record_id))
    if record is None or decision_on_file(record) != DltState.CONFIRMED.value:
        return []  # a confirmation reopened as a suspicion (the AE recoded) is still the committee's decision
    why = f" ({data.reason})" if data.reason else ""
    detail = (
        f"The site marked AE {data.record_id} ({record.term}, grade {record.grade}) "
        f"{data.status.replace('_', ' ')}{why}, but its DLT was confirmed by {record.decided_by or 'an officer'} "
        f"and still counts in arm {record.arm or 'unknown'}'s 3+3 tally. Check with the site whether the event "
        "happened to this subject; if not, review the decision and revise it ('Revise this decision' on the DLT's "
        f"page in the console, or reject DLT {record.dlt_id} with expected_state 'confirmed'): the arm's 3+3 is "
        "then reassessed."
    )
    return [
        data_quality.flag(
            envelope,
            record_type="ae",
            record_id=data.record_id,
            code=CONFIRMED_DLT_AE_RETRACTED,
            detail=detail,
            topic=topic,
        )
    ]
