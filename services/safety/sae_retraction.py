"""Safety's service layer for an SAE whose AE the site takes back (entered in error, deleted) or restores.

The decision is pure (`sae.status_change_signal`, `sae.reportable`): notify holds an SAE open while the AE is
serious and not taken back. Here: what the transition says to notify, built from the stored AE.
- taken back: `sae.withdrawn` (notify cancels the 24 h report obligation and tells whoever was paged);
- restored: `sae.detected` again, with the stored awareness (the clock it always had, overdue if past);
- a version of an AE the site has taken back (no restore): folded and stored, never paged; when the site sent it
  after its retraction, the site is asked to restore the AE if it is real (a data-quality finding).
Keyword-only; never commits.
"""

from __future__ import annotations

from datetime import datetime

from services.safety import data_quality, protocol_engine, store
from services.safety.batch_records import BatchRecords
from services.safety.models import AeVersion
from services.safety.sae import SaeSignalKind, SaeState, criteria_of, sae_data, status_change_signal
from shared.clock import utc
from shared.events import (
    AeData,
    AeReported,
    RecordStatusChanged,
    SaeDetected,
    SaeWithdrawalData,
    SaeWithdrawn,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing

VERSION_OF_RETRACTED_AE = "version_of_retracted_ae"
"""A new version of an AE the site marked entered in error or deleted, sent after that: restore it or re-report it."""


def status_changed(
    records: BatchRecords, envelope: RecordStatusChanged, *, previous_status: str | None, topic: str
) -> list[Outgoing]:
    """The site's new status of an AE (stored by the caller) against the one it replaced: the SAE signal, if any,
    and, for a retraction, the finding about versions the site sent after it (processed before it)."""
    subject_id, ae_id = envelope.subject, envelope.data.record_id
    row = records.seriousness(subject_id, ae_id)
    state = store.sae_state_of(row) if row is not None else None
    taken_back = envelope.data.status in store.INACTIVE
    kind = status_change_signal(state, was_taken_back=previous_status in store.INACTIVE, taken_back=taken_back)
    versions = [v for v in records.ae_versions_of(subject_id) if v.ae_id == ae_id] if state is not None else []
    latest = max(versions, key=lambda v: v.version, default=None)
    out: list[Outgoing] = []
    if kind is not None and state is not None and latest is not None:
        if kind is SaeSignalKind.WITHDRAWN:
            signal: SaeWithdrawn | SaeDetected = _withdrawal(envelope, state, latest)
        else:
            signal = _restored(envelope, state, latest)
        out.append(Outgoing(topic=topic, key=message_key(envelope.trialid, subject_id), envelope=signal))
    if taken_back and previous_status not in store.INACTIVE:
        since = utc(_changed_at(envelope))
        after = [v for v in versions if utc(v.received_at) > since]
        if after:
            sent_after = max(after, key=lambda v: v.version)
            data = AeData.model_validate(sent_after.payload)
            detail = retracted_version_detail(data, status=envelope.data.status)
            flag = data_quality.flag(
                envelope, record_type="ae", record_id=ae_id, code=VERSION_OF_RETRACTED_AE, detail=detail, topic=topic
            )
            out.append(flag)
    return out


def version_while_taken_back(records: BatchRecords, envelope: AeReported, *, topic: str) -> list[Outgoing]:
    """A version of an AE the site has taken back: stored, never paged. Sent after the retraction (by the site's
    clocks, whatever order we process them in: the retraction processed later says the same), it may mean the
    retraction was a mistake: the site is asked to restore the AE or report the new event under a new AE id. Sent
    before it (a reordered backfill), it is the history the retraction covers: nothing to ask."""
    ae = envelope.data
    status = records.status(envelope.subject, "ae", ae.ae_id)
    if status is None or status.status not in store.INACTIVE:
        return []
    if utc(envelope.receivedat) <= utc(status.changed_at):
        return []
    detail = retracted_version_detail(ae, status=status.status)
    return [
        data_quality.flag(
            envelope, record_type="ae", record_id=ae.ae_id, code=VERSION_OF_RETRACTED_AE, detail=detail, topic=topic
        )
    ]


def retracted_version_detail(ae: AeData, *, status: str) -> str:
    serious = criteria_of(ae)
    seriousness = f" It reports seriousness ({', '.join(sorted(serious))})." if serious else ""
    return (
        f"AE {ae.ae_id} version {ae.version} ({ae.term}) was received after the site marked the AE "
        f"{status.replace('_', ' ')}; it is stored but no SAE report is tracked for it.{seriousness} If the AE "
        "is real, restore it; if this is another event, report it under a new AE id."
    )


def _changed_at(envelope: RecordStatusChanged) -> datetime:
    return envelope.data.changed_at or envelope.receivedat


def _withdrawal(envelope: RecordStatusChanged, state: SaeState, latest: AeVersion) -> SaeWithdrawn:
    if state.awareness_at is None or state.awareness_basis is None:
        raise ValueError("a serious AE without the awareness time its clock started from")
    ae = AeData.model_validate(latest.payload)
    status = envelope.data.status
    assert status != "restored"  # the decision withdraws only on a retraction
    kind = SaeSignalKind.WITHDRAWN
    return SaeWithdrawn(
        id=deterministic_id("signal", envelope.id, str(kind)),
        source=protocol_engine.SIGNAL_SOURCE,
        subject=envelope.subject,
        time=envelope.receivedat,
        trialid=envelope.trialid,
        data=SaeWithdrawalData(
            site_id=envelope.siteid,
            subject_id=envelope.subject,
            ae_id=ae.ae_id,
            ae_version=latest.version,
            term=ae.ctcae_term or ae.term,
            status=status,
            reason=envelope.data.reason,
            changed_at=_changed_at(envelope),
            awareness_at=state.awareness_at,
            awareness_basis=state.awareness_basis,
            received_at=envelope.receivedat,
            source_event_id=envelope.id,
        ),
    )


def _restored(envelope: RecordStatusChanged, state: SaeState, latest: AeVersion) -> SaeDetected:
    """The SAE as its stored versions give it, with the awareness it always had: restoring never restarts the
    clock (a report due in the past is overdue at once)."""
    ae = AeData.model_validate(latest.payload)
    kind = SaeSignalKind.DETECTED
    return SaeDetected(
        id=deterministic_id("signal", envelope.id, str(kind)),
        source=protocol_engine.SIGNAL_SOURCE,
        subject=envelope.subject,
        time=envelope.receivedat,
        trialid=envelope.trialid,
        data=sae_data(envelope, ae, version=latest.version, state=state),
    )
