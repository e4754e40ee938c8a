"""Data: the site's explicit re-entry links that cross subjects, read for the pure rule (`sae_reentry.reentry_of`).

A serious AE entered under a mistyped subject id is deleted there, naming its re-entry under the right subject
(`RecordStatusData.replaced_by`). The re-entry is the same case, so it keeps the first record's clock; but the two
subjects may sit on different partitions, so either event may be processed first. Each direction reads here:
- the re-entry's subject, when its serious AE is signalled: the retractions in *other* subjects of the trial that
  name this AE (`foreign_retractions`), with the withdrawn AE's stored versions;
- the deleting subject, when its retraction (or its restore, or a late version of the AE it took back) is processed:
  the other subjects holding the AE it names (`reentry_subjects`), whose SAE clock and SUSAR day 0 are then recomputed.
Only an explicit `replaced_by` crosses subjects (never a guess by term and date), only within the trial, only when
the deleting subject has no AE of that id itself (then the name is its own, as `sae_reentry` reads it), and only when
exactly one other subject holds an AE of that id: EDCs number AEs per subject, so 'AE-2' held by two other subjects
does not say which is the re-entry (neither links; the site is asked, `sae_retraction.ambiguous_replacement`). The
link is never stored: every direction computes it from the stored rows, so the same data in any order give the same
clock; an AE of that id arriving later (in the deleting subject, or in a second other subject) ends a link it made.
Keyword-only; never commits.
"""

from __future__ import annotations

from sqlmodel import col, select

from services.safety.batch_records import BatchRecords
from services.safety.models import AeSeriousness, RecordStatus
from services.safety.sae_reentry import Retraction, StoredVersion
from services.safety.subject_store import INACTIVE
from shared.events import AeReported


def retractions_naming(records: BatchRecords, *, replaced_by: str) -> list[RecordStatus]:
    """The standing AE retractions anywhere in the trial that name `replaced_by` as their replacement. One query over
    the trial's status rows (the primary key's prefix; retractions are few); none, without it, when the batch knows
    that no retraction can name it."""
    if not records.may_be_named(replaced_by):
        return []
    query = select(RecordStatus).where(
        RecordStatus.trial_id == records.trial_id,
        RecordStatus.record_type == "ae",
        RecordStatus.replaced_by == replaced_by,
        col(RecordStatus.status).in_(sorted(INACTIVE)),
    )
    return sorted(records.session.exec(query).all(), key=lambda r: (r.subject_id, r.record_id))


def named_on_arrival(records: BatchRecords, envelope: AeReported) -> list[RecordStatus]:
    """The standing retractions naming the AE of `envelope` when it is its subject's first version of that AE (a new
    holder of the id: a link across subjects may end, `linked_subject`); else none, without a query."""
    ae_id = envelope.data.ae_id
    if any(v.ae_id == ae_id and v.event_id != envelope.id for v in records.ae_versions_of(envelope.subject)):
        return []
    return retractions_naming(records, replaced_by=ae_id)


def holders(records: BatchRecords, *, ae_id: str) -> frozenset[str]:
    """The subjects of the trial holding an AE `ae_id` (any AE stored, serious or not, standing or taken back: the
    id is what the site's `replaced_by` names)."""
    query = select(AeSeriousness.subject_id).where(
        AeSeriousness.trial_id == records.trial_id, AeSeriousness.ae_id == ae_id
    )
    return frozenset(records.session.exec(query).all())


def linked_subject(named_by: str, held_by: frozenset[str]) -> str | None:
    """The one other subject whose AE a retraction in `named_by` links to across subjects, given the subjects
    holding the named id: none when `named_by` holds it (its own), or when no other or several others do."""
    others = held_by - {named_by}
    if named_by in held_by or len(others) != 1:
        return None
    return next(iter(others))


def foreign_retractions(
    records: BatchRecords, *, subject_id: str, ae_id: str, ignoring: frozenset[str] = frozenset()
) -> tuple[list[Retraction], list[StoredVersion]]:
    """The standing AE retractions in other subjects of the trial that name `subject_id`'s AE `ae_id` as their
    replacement and link to it (`linked_subject`), and the withdrawn AEs' stored versions, each tagged with its
    subject; the subjects found load through the batch. `ignoring`: subjects whose AE `ae_id` is disregarded (it
    just arrived: the link as it stood before it)."""
    rows = [r for r in retractions_naming(records, replaced_by=ae_id) if r.subject_id != subject_id]
    if not rows:
        return [], []
    held_by = (holders(records, ae_id=ae_id) - ignoring) | {subject_id}
    retractions: list[Retraction] = []
    versions: list[StoredVersion] = []
    for row in rows:
        if linked_subject(row.subject_id, held_by) != subject_id:
            continue  # the deleting subject's own AE of that id, or another subject's too: not this one's
        theirs = records.ae_versions_of(row.subject_id)
        retractions.append(
            Retraction(
                row.record_id, row.status, row.changed_at, row.reason, row.replaced_by, subject_id=row.subject_id
            )
        )
        versions += [
            StoredVersion(
                v.ae_id, v.payload, v.received_at, version=v.version, event_id=v.event_id, subject_id=row.subject_id
            )
            for v in theirs
            if v.ae_id == row.record_id
        ]
    return retractions, versions


def reentry_subjects(records: BatchRecords, *, subject_id: str, replaced_by: str) -> list[str]:
    """The other subject of the trial whose AE `replaced_by` a retraction in `subject_id` links to (`linked_subject`),
    as a list: empty when `subject_id` holds an AE of that id itself (then the link is within the subject) or when
    no other subject, or several, hold one."""
    linked = linked_subject(subject_id, holders(records, ae_id=replaced_by))
    return [linked] if linked is not None else []
