"""Data: the site's explicit re-entry links that cross subjects, read for the pure rule (`sae_reentry.reentry_of`).

A serious AE entered under a mistyped subject id is deleted there, naming its re-entry under the right subject
(`RecordStatusData.replaced_by`). The re-entry is the same case, so it keeps the first record's clock; but the two
subjects may sit on different partitions, so either event may be processed first. Each direction reads here:
- the re-entry's subject, when its serious AE is signalled: the retractions in *other* subjects of the trial that
  name this AE (`foreign_retractions`), with the withdrawn AE's stored versions;
- the deleting subject, when its retraction (or its restore, or a late version of the AE it took back) is processed:
  the other subjects holding the AE it names (`reentry_subjects`), whose SAE clock and SUSAR day 0 are then recomputed.
Only an explicit `replaced_by` crosses subjects (never a guess by term and date), only within the trial, and only when
the deleting subject has no AE of that id itself (then the name is its own, as `sae_reentry` reads it). The link is
never stored: both directions compute it from the stored rows, so the same data in any order give the same clock.
Keyword-only; never commits.
"""

from __future__ import annotations

from sqlmodel import col, select

from services.safety.batch_records import BatchRecords
from services.safety.models import AeSeriousness, RecordStatus
from services.safety.sae_reentry import Retraction, StoredVersion
from services.safety.subject_store import INACTIVE


def foreign_retractions(
    records: BatchRecords, *, subject_id: str, ae_id: str
) -> tuple[list[Retraction], list[StoredVersion]]:
    """The standing AE retractions in other subjects of the trial that name `subject_id`'s AE `ae_id` as their
    replacement, and the withdrawn AEs' stored versions, each tagged with its subject. One query over the trial's
    status rows (the primary key's prefix; retractions are few); the subjects found load through the batch."""
    query = select(RecordStatus).where(
        RecordStatus.trial_id == records.trial_id,
        RecordStatus.record_type == "ae",
        RecordStatus.replaced_by == ae_id,
        RecordStatus.subject_id != subject_id,
        col(RecordStatus.status).in_(sorted(INACTIVE)),
    )
    retractions: list[Retraction] = []
    versions: list[StoredVersion] = []
    for row in sorted(records.session.exec(query).all(), key=lambda r: (r.subject_id, r.record_id)):
        theirs = records.ae_versions_of(row.subject_id)
        if any(v.ae_id == ae_id for v in theirs):
            continue  # the deleting subject has an AE of that id: the name is its own
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
    """The other subjects of the trial holding an AE `replaced_by` that a retraction in `subject_id` names, when
    `subject_id` has no AE of that id itself (then the link is within the subject)."""
    if any(v.ae_id == replaced_by for v in records.ae_versions_of(subject_id)):
        return []
    query = select(AeSeriousness.subject_id).where(
        AeSeriousness.trial_id == records.trial_id,
        AeSeriousness.ae_id == replaced_by,
        AeSeriousness.subject_id != subject_id,
    )
    return sorted(set(records.session.exec(query).all()))
