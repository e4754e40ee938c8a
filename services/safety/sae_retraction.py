"""Safety's service layer for an SAE whose AE the site takes back (entered in error, deleted) or restores.

The decision is pure (`sae.status_change_signal`, `sae.reportable`): notify holds an SAE open while the AE is
serious and not taken back. Here: what the transition says to notify, built from the stored AE.
- taken back: `sae.withdrawn` (notify cancels the 24 h report obligation and tells whoever was paged);
- restored: `sae.detected` again, with the stored awareness (the clock it always had, overdue if past);
- a version of an AE the site has taken back (no restore): folded and stored, never paged; when the site sent it
  after its retraction (by the site's entry time where the envelope has one, else our receipt), the site is asked
  to restore the AE if it is real (a data-quality finding);
- a serious AE the site re-entered under a new id keeps the taken-back AE's (earlier) clock in its SAE signals,
  whichever came first, with a finding naming both (the pure rule: `sae_reentry`); across subjects only when the
  retraction names it (`replaced_by`: an AE entered under a mistyped subject id, `reentry_links`), and then the
  re-entry's subject is told, whichever subject's event came last (`relinked_elsewhere`); an id that several other
  subjects hold links none of them (the deleting subject's site is asked which, `ambiguous_replacement`), and an AE
  of that id arriving later (a second other subject's, or the deleting subject's own) ends the link, told to the AE
  that had it (`new_holder`).
- a serious AE taken back naming a replacement (`replaced_by`) that is not serious: a finding for the officer and
  the site (`SAE_REPLACED_BY_NON_SERIOUS`), whichever of the three records came last: no SAE report is tracked.
Keyword-only; never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

from services.safety import data_quality, protocol_engine, reentry_links, store
from services.safety.batch_records import BatchRecords
from services.safety.models import AeVersion, RecordStatus
from services.safety.sae import (
    SaeSignalKind,
    SaeState,
    criteria_of,
    sae_data,
    site_entry_time,
    status_change_signal,
)
from services.safety.sae_reentry import (
    REENTRY_CLOCK,
    ReEntry,
    Retraction,
    StoredVersion,
    reentry_detail,
    reentry_of,
    serious_clock,
    terms_of,
)
from shared.clock import utc
from shared.events import (
    AeData,
    AeReported,
    ClinicalEnvelopeBase,
    RecordStatusChanged,
    SaeDetected,
    SaeUpdated,
    SaeWithdrawalData,
    SaeWithdrawn,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing

EnvelopeT = TypeVar("EnvelopeT", bound=ClinicalEnvelopeBase)

VERSION_OF_RETRACTED_AE = "version_of_retracted_ae"
"""A new version of an AE the site marked entered in error or deleted, sent after that: restore it or re-report it."""

SAE_REPLACED_BY_NON_SERIOUS = "sae_replaced_by_non_serious"
"""The site took a serious AE back naming a replacement that is not serious: the SAE report is no longer tracked."""

SAE_REPLACED_BY_AMBIGUOUS = "sae_replaced_by_ambiguous"
"""The site took a serious AE back naming a replacement id that it does not hold and several other subjects do:
none is taken as the re-entry; the site says which one is."""


def status_changed(
    records: BatchRecords,
    envelope: RecordStatusChanged,
    *,
    previous_status: str | None,
    topic: str,
    lookback: timedelta,
    was_retracted: Retraction | None = None,
) -> list[Outgoing]:
    """The site's new status of an AE (stored by the caller) against the one it replaced: the SAE signal, if any,
    and, for a retraction, the finding about versions the site sent after it (processed before it) and the clock
    of a serious AE that re-enters it (processed before it: see `sae_reentry`); for a restore, the finding for an AE
    that was taken as its re-entry (`was_retracted`: the retraction the restore ends, read before the update)."""
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
            linked, link = reentry_clock(records, subject_id=subject_id, ae_id=ae_id, state=state, lookback=lookback)
            signal = _restored(envelope, linked, latest, clock_from_ae_id=link.withdrawn.ae_id if link else None)
        out.append(Outgoing(topic=topic, key=message_key(envelope.trialid, subject_id), envelope=signal))
    if taken_back and previous_status not in store.INACTIVE:
        since = utc(_changed_at(envelope))
        after = [v for v in versions if utc(v.entered_at or v.received_at) > since]
        if after:
            sent_after = max(after, key=lambda v: v.version)
            data = AeData.model_validate(sent_after.payload)
            detail = retracted_version_detail(data, status=envelope.data.status)
            flag = data_quality.flag(
                envelope, record_type="ae", record_id=ae_id, code=VERSION_OF_RETRACTED_AE, detail=detail, topic=topic
            )
            out.append(flag)
        if state is not None and state.serious:  # a serious AE re-entered before this retraction takes its clock
            out += relinked_saes(records, envelope, withdrawn_ae_id=ae_id, lookback=lookback, topic=topic)
            out += relinked_elsewhere(records, envelope, withdrawn_ae_id=ae_id, lookback=lookback, topic=topic)
            out += ambiguous_replacement(records, envelope, subject_id=subject_id, withdrawn_ae_id=ae_id, topic=topic)
            out += non_serious_replacement(records, envelope, withdrawn_ae_id=ae_id, topic=topic)
    if not taken_back and was_retracted is not None and state is not None and state.serious:
        out += unlinked_saes(records, envelope, was_retracted=was_retracted, lookback=lookback, topic=topic)
        out += unlinked_elsewhere(records, envelope, was_retracted=was_retracted, lookback=lookback, topic=topic)
    return out


def standing_retraction(row: RecordStatus | None) -> Retraction | None:
    """The site's retraction a status row holds (None when the record stands): read before a new status updates it."""
    if row is None or row.status not in store.INACTIVE:
        return None
    return Retraction(row.record_id, row.status, row.changed_at, row.reason, row.replaced_by)


def unlinked_saes(
    records: BatchRecords, envelope: RecordStatusChanged, *, was_retracted: Retraction, lookback: timedelta, topic: str
) -> list[Outgoing]:
    """The site restored an AE that a standing serious AE was taken to re-enter: both now stand as SAEs. The officer
    and the site are told (the same finding thread), since they may be one event reported twice; no SAE signal: the
    restored AE is paged on its own clock, and notify keeps the earlier deadline it gave the other (never later)."""
    subject_id, restored = envelope.subject, was_retracted.ae_id
    retractions = _retractions(records, subject_id, excluding=None)
    versions = _stored_versions(records, subject_id)
    taken_back = {r.ae_id for r in retractions}
    theirs = terms_of(v for v in versions if v.ae_id == restored)
    out: list[Outgoing] = []
    for ae_id in sorted({v.ae_id for v in versions} - taken_back - {restored}):
        mine = [v for v in versions if v.ae_id == ae_id]
        if was_retracted.replaced_by != ae_id and not terms_of(mine) & theirs:
            continue
        row = records.seriousness(subject_id, ae_id)
        own = store.sae_state_of(row) if row is not None else None
        if own is None or not own.serious or own.awareness_at is None:
            continue
        clock = own.awareness_at
        before = reentry_of(
            ae_id, own_clock=clock, versions=versions, retractions=[*retractions, was_retracted], lookback=lookback
        )
        if before is None or before.withdrawn.ae_id != restored:
            continue
        now = reentry_of(ae_id, own_clock=clock, versions=versions, retractions=retractions, lookback=lookback)
        detail = unlinked_detail(ae_id, restored=restored, own_clock=clock, now=now)
        code = REENTRY_CLOCK  # the same thread as the finding that linked them
        out.append(
            data_quality.flag(
                envelope, record_type="ae", record_id=ae_id, code=code, detail=detail, topic=topic, per_record=True
            )
        )
    return out


def unlinked_detail(ae_id: str, *, restored: str, own_clock: datetime, now: ReEntry | None) -> str:
    clock = (
        f"its clock is now AE {now.withdrawn.ae_id}'s, {utc(now.awareness_at):%Y-%m-%d %H:%M UTC}"
        if now is not None
        else f"its own clock is {utc(own_clock):%Y-%m-%d %H:%M UTC}"
    )
    return (
        f"The site restored AE {restored}: serious AE {ae_id} is no longer taken as its re-entry ({clock}); both now "
        f"stand as SAEs. If they report the same event, the site should mark one entered in error; the report "
        f"of AE {ae_id} stays due by the earlier deadline already given."
    )


def version_while_taken_back(
    records: BatchRecords, envelope: AeReported, *, topic: str, lookback: timedelta
) -> list[Outgoing]:
    """A version of an AE the site has taken back: stored, never paged. Sent after the retraction (by the site's
    clocks, whatever order we process them in: the retraction processed later says the same), it may mean the
    retraction was a mistake: the site is asked to restore the AE or report the new event under a new AE id. Sent
    before it (a reordered backfill, or a webhook the EDC retried after the deletion: the site's entry time, when
    the envelope has one, tells; else our receipt, which errs on asking), it is the history the retraction covers:
    nothing to ask. A serious version may also give the AE's re-entry an earlier clock (see `sae_reentry`)."""
    ae = envelope.data
    status = records.status(envelope.subject, "ae", ae.ae_id)
    if status is None or status.status not in store.INACTIVE:
        return []
    out: list[Outgoing] = []
    if criteria_of(ae):
        out += relinked_saes(
            records, envelope, withdrawn_ae_id=ae.ae_id, lookback=lookback, topic=topic, new_version_event=envelope.id
        )
        out += relinked_elsewhere(
            records, envelope, withdrawn_ae_id=ae.ae_id, lookback=lookback, topic=topic, new_version_event=envelope.id
        )
        earlier = [
            v for v in _stored_versions(records, envelope.subject) if v.ae_id == ae.ae_id and v.event_id != envelope.id
        ]
        if serious_clock(earlier) is None:  # the first serious version: a clock now hangs on the named replacement
            out += ambiguous_replacement(
                records, envelope, subject_id=envelope.subject, withdrawn_ae_id=ae.ae_id, topic=topic
            )
        out += non_serious_replacement(records, envelope, withdrawn_ae_id=ae.ae_id, topic=topic)
    if utc(site_entry_time(envelope) or envelope.receivedat) <= utc(status.changed_at):
        return out
    detail = retracted_version_detail(ae, status=status.status)
    flag = data_quality.flag(
        envelope, record_type="ae", record_id=ae.ae_id, code=VERSION_OF_RETRACTED_AE, detail=detail, topic=topic
    )
    return [flag, *out]


def non_serious_replacement(
    records: BatchRecords, envelope: ClinicalEnvelopeBase, *, withdrawn_ae_id: str, topic: str
) -> list[Outgoing]:
    """The site took serious AE `withdrawn_ae_id` back naming a replacement (`replaced_by`) that is stored and not
    serious: the SAE's report obligation ended with the retraction and none replaced it, although a follow-up never
    downgrades seriousness. The officer and the site are told (whichever of the three arrived last); nothing is paged
    until the replacement is reported serious (it then takes the first record's clock)."""
    subject_id = envelope.subject
    status = records.status(subject_id, "ae", withdrawn_ae_id)
    if status is None or status.status not in store.INACTIVE or not status.replaced_by:
        return []
    withdrawn = records.seriousness(subject_id, withdrawn_ae_id)
    replacement = records.seriousness(subject_id, status.replaced_by)
    if withdrawn is None or replacement is None or not withdrawn.criteria or replacement.criteria:
        return []
    criteria = ", ".join(sorted(withdrawn.criteria)).replace("_", " ")
    new = status.replaced_by
    detail = (
        f"Serious AE {withdrawn_ae_id} ({criteria}) was marked {status.status.replace('_', ' ')} by the site, which "
        f"names AE {new} as its replacement; AE {new} is not reported serious, so no SAE report is tracked for the "
        f"event any more. A follow-up never downgrades seriousness: if the event was serious, the site should record "
        f"its seriousness on AE {new} (its 24 h clock is then AE {withdrawn_ae_id}'s); if not, the safety officer "
        "documents why the case is no longer serious."
    )
    return [
        data_quality.flag(
            envelope, record_type="ae", record_id=new, code=SAE_REPLACED_BY_NON_SERIOUS, detail=detail, topic=topic
        )
    ]


def ambiguous_replacement(
    records: BatchRecords, envelope: ClinicalEnvelopeBase, *, subject_id: str, withdrawn_ae_id: str, topic: str
) -> list[Outgoing]:
    """Serious AE `withdrawn_ae_id` of `subject_id` is taken back naming a replacement id that `subject_id` does not
    hold and several other subjects do (EDCs number AEs per subject): no cross-subject link (`reentry_links`), each
    keeps its own clock, and the deleting subject's site is told, naming the subjects, whichever record came last
    (the retraction, the first serious version of the AE it took back, or another subject's AE of that id)."""
    status = records.status(subject_id, "ae", withdrawn_ae_id)
    if status is None or status.status not in store.INACTIVE or not status.replaced_by:
        return []
    new = status.replaced_by
    held_by = reentry_links.holders(records, ae_id=new)
    others = sorted(held_by - {subject_id})
    if subject_id in held_by or len(others) < 2:
        return []
    first = serious_clock(v for v in _stored_versions(records, subject_id) if v.ae_id == withdrawn_ae_id)
    if first is None:
        return []
    subjects = ", ".join(others[:-1]) + f" and {others[-1]}"
    detail = (
        f"Serious AE {withdrawn_ae_id} was marked {status.status.replace('_', ' ')} by the site, which names AE {new} "
        f"as its replacement; subject {subject_id} has no AE {new}, and subjects {subjects} each hold one (AE ids are "
        f"numbered per subject), so none is taken as its re-entry: each keeps its own 24 h SAE clock and SUSAR "
        f"day 0. The site should say which AE re-enters AE {withdrawn_ae_id} (correct the replacement it names, or "
        f"enter the re-entry under subject {subject_id}); if one of them is the same case, its report is due from AE "
        f"{withdrawn_ae_id}'s first receipt, {utc(first[0]):%Y-%m-%d %H:%M UTC} (ICH E2D)."
    )
    there = envelope if envelope.subject == subject_id else _in_subject(records, envelope, subject_id)
    return [
        data_quality.flag(
            there,
            record_type="ae",
            record_id=withdrawn_ae_id,
            code=SAE_REPLACED_BY_AMBIGUOUS,
            detail=detail,
            topic=topic,
            per_record=True,
        )
    ]


def new_holder(
    records: BatchRecords, envelope: AeReported, *, named: Sequence[RecordStatus], lookback: timedelta, topic: str
) -> list[Outgoing]:
    """The first version of an AE whose id standing retractions (`named`) name as their replacement: one more subject
    holds the id (`reentry_links.named_on_arrival`). A cross-subject link that ends with it (the deleting subject's
    own AE of that id came, or a second other subject's: `reentry_links.linked_subject`) is told to the AE that had
    it, in the finding thread that linked them; no SAE signal: notify keeps the earlier deadline it gave (never
    later). An id now held by several other subjects is told to the deleting subject's site
    (`ambiguous_replacement`)."""
    ae_id, newcomer = envelope.data.ae_id, envelope.subject
    out: list[Outgoing] = []
    for subject_id in sorted(reentry_links.holders(records, ae_id=ae_id) - {newcomer}):
        out += _link_ended(records, envelope, subject_id=subject_id, lookback=lookback, topic=topic)
    for row in named:
        if row.subject_id != newcomer:
            out += ambiguous_replacement(
                records, envelope, subject_id=row.subject_id, withdrawn_ae_id=row.record_id, topic=topic
            )
    return out


def _link_ended(
    records: BatchRecords, envelope: AeReported, *, subject_id: str, lookback: timedelta, topic: str
) -> list[Outgoing]:
    """`subject_id`'s serious AE of the newcomer's id, when the newcomer ended its link to another subject's
    retraction: the finding that says so."""
    ae_id, newcomer = envelope.data.ae_id, envelope.subject
    row = records.seriousness(subject_id, ae_id)
    own = store.sae_state_of(row) if row is not None else None
    if own is None or not own.serious or own.awareness_at is None or ae_id in records.inactive(subject_id, "ae"):
        return []
    ignoring = frozenset({newcomer})
    _, before = reentry_clock(
        records, subject_id=subject_id, ae_id=ae_id, state=own, lookback=lookback, ignoring=ignoring
    )
    if before is None or before.withdrawn.subject_id is None:
        return []  # it had no cross-subject link: a newcomer elsewhere changes nothing
    _, now = reentry_clock(records, subject_id=subject_id, ae_id=ae_id, state=own, lookback=lookback)
    if now is not None and now.withdrawn == before.withdrawn:
        return []
    them = before.withdrawn.label
    why = (
        f"subject {newcomer} now has an AE {ae_id} of its own, which the site's replacement names"
        if newcomer == before.withdrawn.subject_id
        else f"subject {newcomer} now holds an AE {ae_id} too, so the site's replacement does not say which "
        "subject's AE re-enters it (the site is asked to say)"
    )
    clock = (
        f"its clock is now {now.withdrawn.label}'s, {utc(now.awareness_at):%Y-%m-%d %H:%M UTC}"
        if now is not None
        else f"its own clock is {utc(own.awareness_at):%Y-%m-%d %H:%M UTC}"
    )
    detail = (
        f"Serious AE {ae_id} is no longer taken as the re-entry of {them}: {why}; {clock}, and so is its SUSAR day 0. "
        f"If it is the same case, the site should say so; the report of AE {ae_id} stays due by the earlier deadline "
        "already given."
    )
    there = _in_subject(records, envelope, subject_id)
    return [
        data_quality.flag(
            there, record_type="ae", record_id=ae_id, code=REENTRY_CLOCK, detail=detail, topic=topic, per_record=True
        )
    ]


def reentry_clock(
    records: BatchRecords,
    *,
    subject_id: str,
    ae_id: str,
    state: SaeState,
    lookback: timedelta,
    ignoring: frozenset[str] = frozenset(),
) -> tuple[SaeState, ReEntry | None]:
    """The state an SAE signal of this AE carries: its own clock, or the earlier one of the serious AE the site took
    back and re-entered as this one (`sae_reentry.reentry_of`), in this subject or, named by `replaced_by`, in another
    subject of the trial (`reentry_links`; `ignoring`: subjects whose AE of this id is disregarded, for the link as it
    stood before one arrived). Reads the subject's statuses and AE versions from the batch, and the trial's
    retractions naming this AE (one query per serious AE signalled)."""
    if state.awareness_at is None:
        return state, None
    retractions = _retractions(records, subject_id, excluding=ae_id)
    foreign, their_versions = reentry_links.foreign_retractions(
        records, subject_id=subject_id, ae_id=ae_id, ignoring=ignoring
    )
    if not retractions and not foreign:
        return state, None
    link = reentry_of(
        ae_id,
        own_clock=state.awareness_at,
        versions=[*_stored_versions(records, subject_id), *their_versions],
        retractions=[*retractions, *foreign],
        lookback=lookback,
    )
    if link is None:
        return state, None
    return replace(state, awareness_at=link.awareness_at, awareness_basis=link.awareness_basis), link


def reentry_finding(
    envelope: ClinicalEnvelopeBase, *, ae_id: str, own: SaeState, link: ReEntry, lookback: timedelta, topic: str
) -> Outgoing:
    if own.awareness_at is None:
        raise ValueError("a serious AE without the awareness time its clock started from")
    detail = reentry_detail(ae_id, link, own_clock=own.awareness_at, lookback=lookback)
    return data_quality.flag(
        envelope, record_type="ae", record_id=ae_id, code=REENTRY_CLOCK, detail=detail, topic=topic, per_record=True
    )


def relinked_saes(
    records: BatchRecords,
    envelope: RecordStatusChanged | AeReported,
    *,
    withdrawn_ae_id: str,
    lookback: timedelta,
    topic: str,
    new_version_event: str | None = None,
) -> list[Outgoing]:
    """The subject's standing serious AEs whose clock moves earlier now that `withdrawn_ae_id` is taken back (the
    re-entry was processed before the retraction) or now that a serious version of it arrived late
    (`new_version_event`): `sae.updated` with the inherited clock (notify moves the deadline earlier, never later)
    and the finding naming both records."""
    subject_id = envelope.subject
    retractions = _retractions(records, subject_id, excluding=None)
    withdrawn = next((r for r in retractions if r.ae_id == withdrawn_ae_id), None)
    if withdrawn is None:
        return []
    versions = _stored_versions(records, subject_id)
    taken_back = {r.ae_id for r in retractions}
    theirs = terms_of(v for v in versions if v.ae_id == withdrawn_ae_id)
    before_versions = [v for v in versions if v.event_id != new_version_event] if new_version_event else versions
    before_retractions = retractions if new_version_event else [r for r in retractions if r.ae_id != withdrawn_ae_id]
    out: list[Outgoing] = []
    for ae_id in sorted({v.ae_id for v in versions} - taken_back):
        mine = [v for v in versions if v.ae_id == ae_id]
        chained = withdrawn.replaced_by in taken_back  # it names an AE taken back too: a chain (A -> B -> C)
        if withdrawn.replaced_by != ae_id and not chained and not terms_of(mine) & theirs:
            continue  # the cheap test first: most of a subject's AEs share no term with the withdrawn one
        row = records.seriousness(subject_id, ae_id)
        own = store.sae_state_of(row) if row is not None else None
        if own is None or not own.serious or own.awareness_at is None:
            continue
        clock = own.awareness_at
        now = reentry_of(ae_id, own_clock=clock, versions=versions, retractions=retractions, lookback=lookback)
        if now is None or withdrawn_ae_id not in {now.withdrawn.ae_id, *(r.ae_id for r in now.chain)}:
            continue  # its clock comes from elsewhere (the chain's first record may be the one taken back now)
        before = reentry_of(
            ae_id, own_clock=clock, versions=before_versions, retractions=before_retractions, lookback=lookback
        )
        if before is not None and before.awareness_at <= now.awareness_at:
            continue
        latest = max(mine, key=lambda v: v.version)
        linked = replace(own, awareness_at=now.awareness_at, awareness_basis=now.awareness_basis)
        ae = AeData.model_validate(latest.payload)
        data = sae_data(envelope, ae, version=latest.version, state=linked, clock_from_ae_id=now.withdrawn.ae_id)
        kind = SaeSignalKind.UPDATED
        signal = SaeUpdated(
            id=deterministic_id("signal", envelope.id, str(kind), ae_id),
            source=protocol_engine.SIGNAL_SOURCE,
            subject=subject_id,
            time=envelope.receivedat,
            trialid=envelope.trialid,
            data=data,
        )
        out.append(Outgoing(topic=topic, key=message_key(envelope.trialid, subject_id), envelope=signal))
        out.append(reentry_finding(envelope, ae_id=ae_id, own=own, link=now, lookback=lookback, topic=topic))
    return out


def relinked_elsewhere(
    records: BatchRecords,
    envelope: RecordStatusChanged | AeReported,
    *,
    withdrawn_ae_id: str,
    lookback: timedelta,
    topic: str,
    new_version_event: str | None = None,
) -> list[Outgoing]:
    """The serious AE in another subject of the trial that this subject's retraction of `withdrawn_ae_id` names as
    its replacement (an AE entered under a mistyped subject id, `reentry_links`), when the re-entry was processed
    first (or a serious version of the withdrawn AE arrived late, `new_version_event`): its clock moves earlier, so
    the re-entry's subject is recomputed: `sae.updated` for that subject with the inherited clock (notify moves the
    deadline earlier, never later) and the finding naming both records, as `relinked_saes` does within a subject."""
    status = records.status(envelope.subject, "ae", withdrawn_ae_id)
    if status is None or status.status not in store.INACTIVE or not status.replaced_by:
        return []
    ae_id = status.replaced_by
    out: list[Outgoing] = []
    for subject_id in reentry_links.reentry_subjects(records, subject_id=envelope.subject, replaced_by=ae_id):
        row = records.seriousness(subject_id, ae_id)
        own = store.sae_state_of(row) if row is not None else None
        if own is None or not own.serious or own.awareness_at is None or ae_id in records.inactive(subject_id, "ae"):
            continue
        linked, now = reentry_clock(records, subject_id=subject_id, ae_id=ae_id, state=own, lookback=lookback)
        if now is None or (now.withdrawn.subject_id, now.withdrawn.ae_id) != (envelope.subject, withdrawn_ae_id):
            continue
        if new_version_event is not None and not _moved_by(now, new_version_event, records, envelope):
            continue
        there = _in_subject(records, envelope, subject_id)
        latest = max((v for v in records.ae_versions_of(subject_id) if v.ae_id == ae_id), key=lambda v: v.version)
        ae = AeData.model_validate(latest.payload)
        clock_from = now.withdrawn.ae_id
        kind = SaeSignalKind.UPDATED
        signal = SaeUpdated(
            id=deterministic_id("signal", envelope.id, str(kind), subject_id, ae_id),
            source=protocol_engine.SIGNAL_SOURCE,
            subject=subject_id,
            time=envelope.receivedat,
            trialid=envelope.trialid,
            data=sae_data(there, ae, version=latest.version, state=linked, clock_from_ae_id=clock_from),
        )
        out.append(Outgoing(topic=topic, key=message_key(envelope.trialid, subject_id), envelope=signal))
        out.append(reentry_finding(there, ae_id=ae_id, own=own, link=now, lookback=lookback, topic=topic))
    return out


def unlinked_elsewhere(
    records: BatchRecords, envelope: RecordStatusChanged, *, was_retracted: Retraction, lookback: timedelta, topic: str
) -> list[Outgoing]:
    """The site restored an AE whose retraction named a serious AE in another subject as its re-entry: both now stand
    as SAEs, so the re-entry's subject is told (the finding thread that linked them), as `unlinked_saes` does within a
    subject; no SAE signal: notify keeps the earlier deadline it gave (never later)."""
    ae_id = was_retracted.replaced_by
    if not ae_id:
        return []
    restored = [
        StoredVersion(v.ae_id, v.payload, v.received_at, version=v.version)
        for v in records.ae_versions_of(envelope.subject)
        if v.ae_id == was_retracted.ae_id
    ]
    first = serious_clock(restored)
    out: list[Outgoing] = []
    for subject_id in reentry_links.reentry_subjects(records, subject_id=envelope.subject, replaced_by=ae_id):
        row = records.seriousness(subject_id, ae_id)
        own = store.sae_state_of(row) if row is not None else None
        if own is None or not own.serious or own.awareness_at is None or ae_id in records.inactive(subject_id, "ae"):
            continue
        if first is None or first[0] >= utc(own.awareness_at):
            continue  # it never took that clock: nothing to undo
        _, now = reentry_clock(records, subject_id=subject_id, ae_id=ae_id, state=own, lookback=lookback)
        them = f"{was_retracted.ae_id} (subject {envelope.subject})"
        detail = unlinked_detail(ae_id, restored=them, own_clock=own.awareness_at, now=now)
        there = _in_subject(records, envelope, subject_id)
        out.append(
            data_quality.flag(
                there,
                record_type="ae",
                record_id=ae_id,
                code=REENTRY_CLOCK,
                detail=detail,
                topic=topic,
                per_record=True,
            )
        )
    return out


def _in_subject(records: BatchRecords, envelope: EnvelopeT, subject_id: str) -> EnvelopeT:
    """The event as the cause of signals about another subject's AE: that subject's id and site, keyed to it."""
    subject = records.subject(subject_id)
    site = subject.site_id if subject is not None else envelope.siteid
    return envelope.model_copy(update={"subject": subject_id, "siteid": site})


def _moved_by(link: ReEntry, event_id: str, records: BatchRecords, envelope: ClinicalEnvelopeBase) -> bool:
    """A late version moved the inherited clock: the clock is that version's (its earliest serious version)."""
    versions = [v for v in records.ae_versions_of(envelope.subject) if v.ae_id == link.withdrawn.ae_id]
    before = serious_clock(
        StoredVersion(v.ae_id, v.payload, v.received_at, version=v.version) for v in versions if v.event_id != event_id
    )
    return before is None or before[0] > link.awareness_at


def _retractions(records: BatchRecords, subject_id: str, *, excluding: str | None) -> list[Retraction]:
    found = []
    for ae_id in sorted(records.inactive(subject_id, "ae")):
        row = records.status(subject_id, "ae", ae_id)
        if ae_id == excluding or row is None:
            continue
        found.append(Retraction(ae_id, row.status, row.changed_at, row.reason, row.replaced_by))
    return found


def _stored_versions(records: BatchRecords, subject_id: str) -> list[StoredVersion]:
    return [
        StoredVersion(v.ae_id, v.payload, v.received_at, version=v.version, event_id=v.event_id)
        for v in records.ae_versions_of(subject_id)
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


def _restored(
    envelope: RecordStatusChanged, state: SaeState, latest: AeVersion, *, clock_from_ae_id: str | None
) -> SaeDetected:
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
        data=sae_data(envelope, ae, version=latest.version, state=state, clock_from_ae_id=clock_from_ae_id),
    )
