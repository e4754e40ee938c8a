"""What the record rules of one consumer batch read, loaded for all the batch's subjects at once.

A lab, AE or dose rule looks up a handful of rows (the subject, a stored result with the same id, the latest
baseline of the test, the term's state, the sites' retractions). Queried per event, that is several round trips
and ORM loads per event; here it is one query per table per batch, kept in memory (strongly referenced, so the
session's identity map keeps them too) for the transaction. Rules write through this object, so what it answers
stays what the database would. Keyword-only; never commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from services.safety.models import (
    AcuteReactionRow,
    AeSeriousness,
    AeVersion,
    Dose,
    LabResult,
    LabTermState,
    RecordStatus,
    Subject,
)
from services.safety.subject_store import INACTIVE
from shared.db import one_of
from shared.events import (
    AeReported,
    ClinicalEnvelope,
    DoseAdministered,
    LabResulted,
)
from shared.rows import new_row

CHUNK = 500
"""Keys per IN list: well under SQLite's and PostgreSQL's parameter limits."""


class BatchRecords:
    def __init__(self, session: Session, *, trial_id: str, envelopes: Sequence[ClinicalEnvelope]) -> None:
        self._session = session
        self.trial_id = trial_id
        self.subjects: dict[str, Subject] = {}
        self._statuses: dict[tuple[str, str], dict[str, RecordStatus]] = defaultdict(dict)
        """(subject, record type) -> record id -> its status row: a subject's records of a type without a scan of the
        batch's statuses (a backfill of retractions asked for them once per event)."""
        self._labs: dict[tuple[str, str], LabResult] = {}
        self._baselines: dict[str, list[LabResult]] = defaultdict(list)
        self._terms: dict[tuple[str, str], LabTermState] = {}
        self._seriousness: dict[tuple[str, str], AeSeriousness] = {}
        self._ae_versions: set[tuple[str, str, int]] = set()
        self._doses: dict[str, dict[str, Dose]] = defaultdict(dict)
        self._versions: dict[str, list[AeVersion]] = {}
        """A subject's stored AE versions, once something asked for them (the acute-reaction window)."""
        self._reactions: dict[str, dict[str, AcuteReactionRow]] = {}
        self._loaded: set[str] = set()
        """Subjects whose subject row, statuses, term states and baseline results are here."""
        self._labs_checked: set[tuple[str, str]] = set()
        self._aes_checked: set[tuple[str, str]] = set()
        self._doses_loaded: set[str] = set()
        self._named_before: set[str] | None = None
        """The replacements (`replaced_by`) the trial's stored standing AE retractions name, read once per batch."""
        self._named_here: set[str] = set()
        """The replacements this batch's retractions named."""
        self._by_test: dict[tuple[str, str], list[LabResult]] = {}
        """(subject, test) -> its non-baseline results, for the subjects whose baseline of that test the batch
        brings (they are graded again against it)."""
        self.load(envelopes)

    def load(self, envelopes: Iterable[ClinicalEnvelope]) -> None:
        """Load what these events will look up and is not here yet: per table, one query for all of them.

        The consumer passes its whole batch up front; a lookup outside what was loaded (a single-event call)
        loads it when it comes, so an answer is never 'absent' for a row that was simply not loaded."""
        todo = [e for e in envelopes if e.trialid == self.trial_id]
        subjects = sorted({e.subject for e in todo} - self._loaded)
        for start in range(0, len(subjects), CHUNK):
            self._load_subjects(subjects[start : start + CHUNK])
        labs = sorted({(e.subject, e.data.result_id) for e in todo if isinstance(e, LabResulted)} - self._labs_checked)
        for start in range(0, len(labs), CHUNK):
            self._load_labs(labs[start : start + CHUNK])
        aes = sorted({(e.subject, e.data.ae_id) for e in todo if isinstance(e, AeReported)} - self._aes_checked)
        for start in range(0, len(aes), CHUNK):
            self._load_aes(aes[start : start + CHUNK])
        acute = {e.subject for e in todo if isinstance(e, AeReported | DoseAdministered)}
        dosed = sorted(acute - self._doses_loaded)
        for start in range(0, len(dosed), CHUNK):
            self._load_doses(dosed[start : start + CHUNK])
        matched = sorted(acute - self._versions.keys())  # an AE or a dose re-matches the acute-reaction window
        for start in range(0, len(matched), CHUNK):
            self._load_acute(matched[start : start + CHUNK])
        tested = sorted(
            {
                (e.subject, _test_key(e.data.test, e.data.loinc))
                for e in todo
                if isinstance(e, LabResulted) and e.data.baseline
            }
            - self._by_test.keys()
        )
        for start in range(0, len(tested), CHUNK):
            self._load_by_test(tested[start : start + CHUNK])

    @property
    def session(self) -> Session:
        """For a lookup across the trial the batch does not hold (`reentry_links`)."""
        return self._session

    def _rows(self, model: Any, subject_ids: Iterable[str], *conditions: Any) -> Any:
        subjects = one_of(self._session, col(model.subject_id), sorted(subject_ids))
        query = select(model).where(model.trial_id == self.trial_id, subjects)
        return self._session.exec(query.where(*conditions))

    def _load_subjects(self, subject_ids: Sequence[str]) -> None:
        for subject in self._rows(Subject, subject_ids):
            self.subjects[subject.subject_id] = subject
        for status in self._rows(RecordStatus, subject_ids):
            self._statuses[(status.subject_id, status.record_type)][status.record_id] = status
        for term in self._rows(LabTermState, subject_ids):
            self._terms[(term.subject_id, term.term)] = term
        for lab in self._rows(LabResult, subject_ids, LabResult.baseline == True):  # noqa: E712 - SQL comparison
            self._labs[(lab.subject_id, lab.result_id)] = lab
            self._baselines[lab.subject_id].append(lab)
        self._loaded.update(subject_ids)
        self._labs_checked.update(self._labs)

    def _load_labs(self, keys: Sequence[tuple[str, str]]) -> None:
        subjects, result_ids = {s for s, _ in keys}, sorted({r for _, r in keys})
        for lab in self._rows(LabResult, subjects, one_of(self._session, col(LabResult.result_id), result_ids)):
            self._labs.setdefault((lab.subject_id, lab.result_id), lab)
        self._labs_checked.update(keys)

    def _load_aes(self, keys: Sequence[tuple[str, str]]) -> None:
        subjects, ae_ids = {s for s, _ in keys}, sorted({a for _, a in keys})
        for row in self._rows(AeSeriousness, subjects, one_of(self._session, col(AeSeriousness.ae_id), ae_ids)):
            self._seriousness.setdefault((row.subject_id, row.ae_id), row)
        query = select(AeVersion.subject_id, AeVersion.ae_id, AeVersion.version).where(
            AeVersion.trial_id == self.trial_id,
            one_of(self._session, col(AeVersion.subject_id), sorted(subjects)),
            one_of(self._session, col(AeVersion.ae_id), ae_ids),
        )
        self._ae_versions.update((s, a, v) for s, a, v in self._session.exec(query))
        self._aes_checked.update(keys)

    def _load_doses(self, subject_ids: Sequence[str]) -> None:
        for dose in self._rows(Dose, subject_ids):
            self._doses[dose.subject_id].setdefault(dose.dose_id, dose)
        self._doses_loaded.update(subject_ids)

    def _load_acute(self, subject_ids: Sequence[str]) -> None:
        versions: dict[str, list[AeVersion]] = {s: [] for s in subject_ids}
        for version in self._rows(AeVersion, subject_ids):
            versions[version.subject_id].append(version)
        reactions: dict[str, dict[str, AcuteReactionRow]] = {s: {} for s in subject_ids}
        for row in self._rows(AcuteReactionRow, subject_ids):
            reactions[row.subject_id][row.ae_id] = row
        for subject_id in subject_ids:
            self._versions.setdefault(subject_id, versions[subject_id])
            self._reactions.setdefault(subject_id, reactions[subject_id])

    def _load_by_test(self, keys: Sequence[tuple[str, str]]) -> None:
        found: dict[tuple[str, str], list[LabResult]] = {key: [] for key in keys}
        subjects = {s for s, _ in keys}
        tests = sorted({k for _, k in keys if not k.startswith("loinc:")})
        loincs = sorted({k.removeprefix("loinc:") for _, k in keys if k.startswith("loinc:")})
        session = self._session
        named = or_(one_of(session, col(LabResult.test), tests), one_of(session, col(LabResult.loinc), loincs))
        for lab in self._rows(LabResult, subjects, LabResult.baseline == False, named):  # noqa: E712 - SQL comparison
            for key in {(lab.subject_id, _test_key(lab.test, lab.loinc)), (lab.subject_id, f"loinc:{lab.loinc}")}:
                if key in found:
                    found[key].append(lab)
        self._by_test.update(found)

    def results_of_test(self, subject_id: str, *, test: str | None, loinc: str | None) -> list[LabResult]:
        """The subject's stored results of a test (by name, else by LOINC) that are not baselines."""
        key = (subject_id, _test_key(test, loinc))
        if key not in self._by_test:
            self._load_by_test([key])
        return list(self._by_test[key])

    def _ensure(self, subject_id: str) -> None:
        if subject_id not in self._loaded:
            self._load_subjects([subject_id])

    # subjects

    def subject(self, subject_id: str) -> Subject | None:
        self._ensure(subject_id)
        return self.subjects.get(subject_id)

    def add_subject(self, subject: Subject) -> None:
        self._session.add(subject)
        self.subjects[subject.subject_id] = subject

    # site statuses

    def inactive(self, subject_id: str, record_type: str) -> dict[str, str]:
        """record_id -> status of the subject's records of this type the site took back."""
        self._ensure(subject_id)
        rows = self._statuses.get((subject_id, record_type), {})
        return {record_id: row.status for record_id, row in rows.items() if row.status in INACTIVE}

    def status(self, subject_id: str, record_type: str, record_id: str) -> RecordStatus | None:
        self._ensure(subject_id)
        return self._statuses.get((subject_id, record_type), {}).get(record_id)

    def add_status(self, row: RecordStatus) -> None:
        self._session.add(row)
        self._statuses[(row.subject_id, row.record_type)][row.record_id] = row

    def note_named(self, replaced_by: str | None) -> None:
        """A retraction of this batch names `replaced_by` (`store.set_record_status`, the one writer of it)."""
        if replaced_by:
            self._named_here.add(replaced_by)

    def may_be_named(self, ae_id: str) -> bool:
        """Whether a standing AE retraction of the trial may name `ae_id` as its replacement; False only when none can.

        Each new AE asks (`reentry_links.named_on_arrival`), and asking the database flushed the batch's writes
        first: 15-20% of a batch of new subjects' time on PostgreSQL for an answer that is almost always 'none'.
        What was stored is read once (not flushed for: the batch's own retractions are in `_named_here`)."""
        if self._named_before is None:
            query = select(RecordStatus.replaced_by).where(
                RecordStatus.trial_id == self.trial_id,
                RecordStatus.record_type == "ae",
                col(RecordStatus.replaced_by).is_not(None),
                col(RecordStatus.status).in_(sorted(INACTIVE)),
            )
            with self._session.no_autoflush:
                self._named_before = {name for name in self._session.exec(query) if name}
        return ae_id in self._named_before or ae_id in self._named_here

    # labs

    def lab(self, subject_id: str, result_id: str) -> LabResult | None:
        if (subject_id, result_id) not in self._labs_checked:
            self._load_labs([(subject_id, result_id)])
        return self._labs.get((subject_id, result_id))

    def latest_baseline(self, subject_id: str, *, test: str | None, loinc: str | None) -> LabResult | None:
        """The latest active baseline result of the same test (by name, else by LOINC)."""
        inactive = self.inactive(subject_id, "lab")  # loads the subject's baselines too
        found = [
            lab
            for lab in self._baselines.get(subject_id, [])
            if lab.baseline and lab.result_id not in inactive and ((lab.test == test) if test else (lab.loinc == loinc))
        ]
        return max(found, key=lambda lab: lab.collected_at, default=None)

    def stored_lab(self, lab: LabResult, *, added: bool) -> None:
        """A result added or corrected: a correction may have made it a baseline."""
        if added:
            self._session.add(lab)
            self._labs[(lab.subject_id, lab.result_id)] = lab
            self._labs_checked.add((lab.subject_id, lab.result_id))
        baselines = self._baselines[lab.subject_id]
        if lab.baseline and all(b is not lab for b in baselines):
            baselines.append(lab)
        same_test = self._by_test.get((lab.subject_id, _test_key(lab.test, lab.loinc)))
        if added and not lab.baseline and same_test is not None:
            same_test.append(lab)

    def term_state(self, subject_id: str, term: str) -> LabTermState:
        self._ensure(subject_id)
        state = self._terms.get((subject_id, term))
        if state is None:
            state = new_row(LabTermState, trial_id=self.trial_id, subject_id=subject_id, term=term)
            self._session.add(state)
            self._terms[(subject_id, term)] = state
        return state

    # adverse events

    def seriousness(self, subject_id: str, ae_id: str) -> AeSeriousness | None:
        if (subject_id, ae_id) not in self._aes_checked:
            self._load_aes([(subject_id, ae_id)])
        return self._seriousness.get((subject_id, ae_id))

    def add_seriousness(self, row: AeSeriousness) -> None:
        self._session.add(row)
        self._seriousness[(row.subject_id, row.ae_id)] = row

    def has_ae_version(self, subject_id: str, ae_id: str, version: int) -> bool:
        if (subject_id, ae_id) not in self._aes_checked:
            self._load_aes([(subject_id, ae_id)])
        return (subject_id, ae_id, version) in self._ae_versions

    def add_ae_version(self, row: AeVersion) -> None:
        self._session.add(row)
        self._ae_versions.add((row.subject_id, row.ae_id, row.version))
        if row.subject_id in self._versions:
            self._versions[row.subject_id].append(row)

    # doses

    def dose(self, subject_id: str, dose_id: str) -> Dose | None:
        if subject_id not in self._doses_loaded:
            self._load_doses([subject_id])
        return self._doses[subject_id].get(dose_id)

    def doses_of(self, subject_id: str) -> list[Dose]:
        if subject_id not in self._doses_loaded:
            self._load_doses([subject_id])
        return list(self._doses[subject_id].values())

    def add_dose(self, dose: Dose) -> None:
        self._session.add(dose)
        self._doses[dose.subject_id][dose.dose_id] = dose

    # what the acute-reaction window re-matches: a subject's AE versions and its stored reactions

    def ae_versions_of(self, subject_id: str) -> list[AeVersion]:
        if subject_id not in self._versions:
            self._load_acute([subject_id])
        return self._versions[subject_id]

    def reactions_of(self, subject_id: str) -> dict[str, AcuteReactionRow]:
        if subject_id not in self._reactions:
            self._load_acute([subject_id])
        return self._reactions[subject_id]

    def add_reaction(self, row: AcuteReactionRow) -> None:
        self._session.add(row)
        self.reactions_of(row.subject_id)[row.ae_id] = row


def _test_key(test: str | None, loinc: str | None) -> str:
    """A result's test as baselines are matched: by name, else by LOINC."""
    return test if test else f"loinc:{loinc}"
