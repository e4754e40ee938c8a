"""Safety's service layer: apply clinical events inside the consumer's transaction.

Returns the signals to publish; the caller puts them in the outbox in the same transaction. After each
event's own rule (lab grading, SAE), every subject whose stored data changed is recomputed by the protocol
engine (DLT window and records, eligibility, response) and the arms by the cohorts (3+3), once per batch
(see `ClinicalBatch`), so late or out-of-order data settles into the same state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from sqlmodel import Session

from services.safety import (
    acute_window,
    data_quality,
    infusion_day,
    lab_revision,
    protocol_conformance,
    protocol_engine,
    reentry_links,
    response_tracking,
    retracted_dlt,
    sae_retraction,
    sample_tracking,
    store,
    subject_store,
)
from services.safety.batch_records import BatchRecords
from services.safety.ctcae import Grade, check_ae
from services.safety.dlt_window import site_offset_minutes
from services.safety.expedited import cases as expedited_cases
from services.safety.held_enrolment_checks import HeldChecks
from services.safety.lab_toxicity import decide, grade_lab
from services.safety.models import DltRecord, Dose, LabResult, LabTermState, ResponseStateRow, SubjectOutcomeRow
from services.safety.sae import SaeAssessment, SaeSignalKind, assess_ae, criteria_of, sae_data
from shared.audit import append_audit, lock_audit_chain
from shared.bulk_insert import copy_new_rows_on_flush
from shared.events import (
    AeData,
    AeReported,
    AeReviewRecorded,
    ClinicalEnvelope,
    DoseAdministered,
    LabData,
    LabResulted,
    LabToxicity,
    LabToxicityData,
    LabToxicityWithdrawalData,
    LabToxicityWithdrawn,
    RecordStatusChanged,
    SaeDetected,
    SaeUpdated,
    SampleCollected,
    StandingResult,
    SubjectEnrolled,
    SubjectStatusChanged,
    TransfusionAdministered,
    VitalsRecorded,
    deterministic_id,
    message_key,
)
from shared.kafka import PoisonMessage
from shared.outbox import Outgoing
from shared.protocol import Protocol

COPIED = (LabResult, LabTermState, Dose, DltRecord, SubjectOutcomeRow, ResponseStateRow)
"""What a batch inserts by the hundred: written by COPY on PostgreSQL (each row carries all its columns)."""
SIGNAL_SOURCE = protocol_engine.SIGNAL_SOURCE
AUDIT_SERVICE = protocol_engine.AUDIT_SERVICE


def apply_clinical_event(
    session: Session, envelope: ClinicalEnvelope, now: datetime, *, protocol: Protocol, signals_topic: str
) -> Sequence[Outgoing]:
    """One event in a transaction of its own: its rule, then its subject's reassessment."""
    batch = ClinicalBatch(session, now, protocol=protocol, signals_topic=signals_topic, envelopes=[envelope])
    return [*batch.apply(envelope), *(outgoing for _, outgoing in batch.finish())]


def open_batch(
    protocol: Protocol, signals_topic: str
) -> Callable[[Session, datetime, Sequence[ClinicalEnvelope]], ClinicalBatch]:
    """The consumer's rule per transaction (see `shared.processing.BatchRule`)."""
    return lambda session, now, envelopes: ClinicalBatch(
        session, now, protocol=protocol, signals_topic=signals_topic, envelopes=envelopes
    )


class ClinicalBatch:
    """Safety's rule for one consumer transaction.

    Each event's own rule (grade a lab, fold an AE's seriousness, store a dose) runs as the event comes. What
    recomputes a subject from all its stored data (DLT window and records, eligibility, response, its 3+3
    outcome) runs once per subject the batch changed, at the end, with the batch's subjects loaded together;
    then the arms whose stored outcomes moved are reassessed once. Recomputing from stored data is what makes
    the same data in any order, in any batching, end in the same state. An enrolment is checked against the other
    subjects' outcomes as the events before it in the batch left them: those changed before it are settled first,
    but for those with nothing but their enrolment yet (their outcome taken as their settle will store it) and
    those with nothing more to come in the batch (the check is held until the batch settles them:
    `held_enrolment_checks`).
    """

    def __init__(
        self,
        session: Session,
        now: datetime,
        *,
        protocol: Protocol,
        signals_topic: str,
        envelopes: Sequence[ClinicalEnvelope] = (),
    ) -> None:
        self._session = session
        copy_new_rows_on_flush(session, COPIED)  # most of what a batch inserts (PostgreSQL: COPY)
        self.records = BatchRecords(session, trial_id=protocol.trial_id, envelopes=envelopes)
        self._now = now
        self._protocol = protocol
        self._topic = signals_topic
        self._pending: dict[str, str] = {}
        """Subject id -> id of the last event that changed it (its reassessment's source)."""
        self._settled: list[tuple[str, Outgoing]] = []
        self._arms: set[str] = set()
        """Arms whose subjects' stored outcomes changed: reassessed once, at the end."""
        self._last_source = ""
        self._outcomes: dict[str, protocol_engine.OutcomeFacts] | None = None
        self._enrolled_only: set[str] = set()
        """Subjects this batch created by their enrolment and nothing else yet: their stored data is that row alone,
        known without a query."""
        self._provisional: dict[str, protocol_engine.OutcomeFacts] = {}
        """The outcomes of enrolled-only subjects still pending, as their settle will store them: what an enrolment's
        check reads of them before then. They settle once, at the end or when they next change, not once before
        each next enrolment and again after their first dose (an enrolment backfill, or a batch of new subjects)."""
        self._audit_locked = False
        self._to_come = Counter(envelope.subject for envelope in envelopes)
        """Subject id -> its events still to come in the batch (at most: a duplicate is skipped): a subject with none
        ends the batch as it stands now. An event beyond the batch's own list (a caller applying more) is safe:
        a subject a held check waits for is settled before anything changes it."""
        self._held = HeldChecks()
        self._waiting: set[str] = set()
        """What the enrolment being applied reads of subjects it waits for (`_before_enrolment`)."""

    def apply(self, envelope: ClinicalEnvelope, *, live: bool = False) -> list[Outgoing]:
        protocol = self._protocol
        if envelope.trialid != protocol.trial_id:
            raise PoisonMessage(
                f"event for trial '{envelope.trialid}' but this safety service runs protocol '{protocol.trial_id}'"
            )
        if not self._audit_locked:  # before any row lock: every safety transaction takes its locks in one order
            lock_audit_chain(self._session, service=AUDIT_SERVICE)
            self._audit_locked = True
        self._to_come[envelope.subject] -= 1
        if envelope.subject in self._held:  # a held check reads this subject as it was: settle it before it changes
            self._settle_subjects(keep=self._pending.keys() - {envelope.subject})
        self._waiting = set()
        if isinstance(envelope, SubjectEnrolled) and self._pending:
            self._before_enrolment(envelope)
        new_subject = isinstance(envelope, SubjectEnrolled) and self.records.subject(envelope.subject) is None
        changed, signals = _apply_own_rule(
            self._session, self.records, envelope, self._now, protocol=protocol, topic=self._topic, batch=self
        )
        if new_subject:
            self._enrolled_only.add(envelope.subject)
        else:
            self._enrolled_only.discard(envelope.subject)
        if changed:
            self._pending.pop(envelope.subject, None)  # re-inserted last: subjects settle in the order last changed
            self._pending[envelope.subject] = envelope.id
        return signals

    def check_enrolment(self, envelope: SubjectEnrolled) -> list[Outgoing]:
        """The enrolment's deviations now, or none yet: held until the subjects it waits for are settled."""
        facts = self._outcome_facts()
        waiting, self._waiting = self._waiting, set()
        if waiting:
            self._held.hold(envelope, facts, waiting)
            return []
        return self._check(envelope, facts)

    def _check(self, envelope: SubjectEnrolled, facts: dict[str, protocol_engine.OutcomeFacts]) -> list[Outgoing]:
        return protocol_engine.check_enrolment(
            self._session,
            protocol=self._protocol,
            envelope=envelope,
            now=self._now,
            signals_topic=self._topic,
            outcomes=facts.values(),
        )

    def _outcome_facts(self) -> dict[str, protocol_engine.OutcomeFacts]:
        """Every subject's stored outcome, read once per batch and kept as the batch settles subjects."""
        if self._outcomes is None:
            facts = protocol_engine.outcome_facts(self._session, trial_id=self._protocol.trial_id)
            self._outcomes = {f.subject_id: f for f in facts}
        return {**self._outcomes, **self._provisional}

    def finish(self) -> list[tuple[str, Outgoing]]:
        self._settle_subjects()
        checked = [(h.envelope.id, signal) for h in self._held.release() for signal in self._check(h.envelope, h.facts)]
        self._settled[:0] = checked  # first, as if checked when applied
        if self._arms:  # only when a subject's stored 3+3 outcome changed
            self._session.flush()
            source_id = self._last_source
            cohort_signals = protocol_engine.reassess_cohorts(
                self._session,
                protocol=self._protocol,
                now=self._now,
                source_id=source_id,
                signals_topic=self._topic,
                arms=self._arms,
            )
            self._settled += [(source_id, signal) for signal in cohort_signals]
            self._arms = set()
        settled, self._settled = self._settled, []
        return settled

    def _before_enrolment(self, envelope: SubjectEnrolled) -> None:
        """Settle what the enrolment's check must see settled now; note what it waits for (`_waiting`).

        The subject itself settles first, as it stood before it was enrolled again. Without a check (enrolled
        again into its arm), nothing else need settle. With one, the others changed before it settle now if more
        of their events come later in the batch; the rest are waited for. Those with nothing but their enrolment
        stay pending either way, their outcome taken as their settle will store it (`_provisional`)."""
        own = envelope.subject
        row = self.records.subject(own)
        checked = row is None or row.arm != envelope.data.arm
        keep = {
            s
            for s in self._pending
            if s in self._enrolled_only or (s != own and (not checked or self._to_come[s] <= 0))
        }
        for subject_id in [s for s in self._pending if s in keep and s in self._enrolled_only]:
            enrolled = self.records.subject(subject_id)
            if subject_id not in self._provisional and enrolled is not None:
                state = subject_store.SubjectState.of_new(enrolled)
                self._provisional[subject_id] = protocol_engine.new_subject_outcome(
                    self._protocol, state, now=self._now
                )
        self._settle_subjects(keep=keep)
        if checked:
            self._waiting = keep - self._enrolled_only

    def _settle_subjects(self, *, keep: Collection[str] = ()) -> None:
        """Settle the pending subjects, but for those in `keep` (they stay pending, in the order they changed)."""
        pending, self._pending = self._pending, {}
        for subject_id in [s for s in pending if s in keep]:
            self._pending[subject_id] = pending.pop(subject_id)
        if not pending:
            return
        self._last_source = next(reversed(pending.values()))
        session = self._session
        trial_id = self._protocol.trial_id
        known = {s: self.records.subject(s) for s in pending if s in self._enrolled_only}
        states = subject_store.load_subject_states(session, trial_id=trial_id, subject_ids=pending.keys() - known)
        states.update({s: subject_store.SubjectState.of_new(row) for s, row in known.items() if row is not None})
        # Each subject's reassessment reads only its loaded state, so what one writes goes to the database with
        # the rest of the batch's writes (one multi-row statement per table), at the next query or the commit.
        with session.no_autoflush:
            self._settle_loaded(pending, states)

    def _settle_loaded(self, pending: dict[str, str], states: dict[str, subject_store.SubjectState]) -> None:
        session, protocol, now, topic = self._session, self._protocol, self._now, self._topic
        trial_id = protocol.trial_id
        for subject_id, source_id in pending.items():
            state = states.get(subject_id)
            if state is None:
                self._held.unchanged(subject_id)
                continue
            signals = protocol_conformance.check_eligibility(
                session, state.subject, protocol=protocol, source_id=source_id, now=now, topic=topic, state=state
            )
            subject = protocol_engine.reassess_subject(
                session,
                protocol=protocol,
                trial_id=trial_id,
                subject_id=subject_id,
                source_event_id=source_id,
                now=now,
                signals_topic=topic,
                state=state,
            )
            signals += subject.signals
            signals += response_tracking.reassess(  # transfusions, counts and the calendar move the response
                session,
                protocol=protocol,
                trial_id=trial_id,
                subject_id=subject_id,
                now=now,
                signals_topic=topic,
                state=state,
            )
            self._arms |= subject.arms
            self._provisional.pop(subject_id, None)
            if self._outcomes is not None:
                if state.outcome is not None:
                    self._outcomes[subject_id] = protocol_engine.OutcomeFacts.of(state.outcome)
                self._held.settled(subject_id, self._outcomes.get(subject_id))
            self._settled += [(source_id, signal) for signal in signals]


def _apply_own_rule(
    session: Session,
    records: BatchRecords,
    envelope: ClinicalEnvelope,
    now: datetime,
    *,
    protocol: Protocol,
    topic: str,
    batch: ClinicalBatch | None = None,
) -> tuple[bool, list[Outgoing]]:
    """The event's own rule and what it alone decides; (whether its subject's stored data changed, signals)."""
    signals: list[Outgoing] = []
    if isinstance(envelope, SubjectEnrolled):
        if protocol.arm(envelope.data.arm) is None:
            raise PoisonMessage(f"arm '{envelope.data.arm}' is not in protocol {protocol.trial_id}")
        existing = records.subject(envelope.subject)
        previous_arm = existing.arm if existing is not None else None
        store.upsert_subject(records, envelope=envelope)
        if previous_arm != envelope.data.arm:
            if batch is not None:
                signals += batch.check_enrolment(envelope)
            else:
                signals += protocol_engine.check_enrolment(
                    session, protocol=protocol, envelope=envelope, now=now, signals_topic=topic
                )
        return True, signals
    store.ensure_subject_in(records, subject_id=envelope.subject, site_id=envelope.siteid)
    if isinstance(envelope, SubjectStatusChanged):
        changed = protocol_engine.record_subject_status(session, envelope=envelope, now=now)
        if changed:
            signals += protocol_engine.death_without_fatal_ae(session, envelope=envelope, now=now, topic=topic)
        return changed, signals
    if isinstance(envelope, VitalsRecorded):  # infusion-day monitoring: no bearing on the DLT/3+3 state
        return False, list(infusion_day.apply_vitals(session, envelope, protocol=protocol, signals_topic=topic)[1])
    if isinstance(envelope, AeReviewRecorded):  # completes a visit's AE assessment (evaluability)
        return infusion_day.apply_ae_review(session, envelope), signals
    changed, signals = _apply_record(session, records, envelope, protocol=protocol, signals_topic=topic, now=now)
    if changed and isinstance(envelope, AeReported | DoseAdministered):  # the 24 h acute-reaction window
        # per event, not per batch: an AE that gets worse version by version alerts at each grade however batched
        signals += acute_window.check_after(session, records, envelope, protocol=protocol, now=now, signals_topic=topic)
    if isinstance(envelope, DoseAdministered):
        _record_site_offset(records, envelope)
        if changed:
            signals += protocol_conformance.check_dose_event(records, envelope, protocol=protocol, now=now, topic=topic)
    if changed and isinstance(envelope, AeReported):
        signals += protocol_engine.unmapped_term_flags(
            envelope_id=envelope.id,
            protocol=protocol,
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            site_id=envelope.siteid,
            data=envelope.data,
            now=now,
            topic=topic,
        )
    return changed, signals


def _record_site_offset(records: BatchRecords, envelope: DoseAdministered) -> None:
    """The sender's UTC offset of an infusion: the subject's site days start and end at its midnight."""
    dose = records.dose(envelope.subject, envelope.data.dose_id)
    offset = site_offset_minutes(envelope.data.administered_at)
    if dose is not None and dose.utc_offset_minutes != offset:
        dose.utc_offset_minutes = offset


def _apply_record(
    session: Session,
    records: BatchRecords,
    envelope: ClinicalEnvelope,
    *,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
) -> tuple[bool, list[Outgoing]]:
    """Store a dose, lab, AE or status; (whether anything new was stored, the record's own signals)."""
    if isinstance(envelope, DoseAdministered):
        saved = store.save_dose(records, envelope=envelope)
        if saved.outcome == "corrected":
            _audit_correction(session, envelope, kind="dose", record_id=envelope.data.dose_id, saved=saved, now=now)
        return saved.changed, []
    if isinstance(envelope, LabResulted):
        return _apply_lab(session, records, envelope, protocol=protocol, signals_topic=signals_topic, now=now)
    if isinstance(envelope, AeReported):
        changed, ae_signals = _apply_ae(records, envelope, protocol=protocol, signals_topic=signals_topic)
        if changed:  # the SUSAR file of this AE (expectedness, clock): after the SAE rules stored the version
            ae_signals += expedited_cases.assess_ae_version(
                session,
                envelope,
                protocol=protocol,
                signals_topic=signals_topic,
                now=now,
                seriousness=records.seriousness(envelope.subject, envelope.data.ae_id),
                records=records,
            )
            named = reentry_links.named_on_arrival(records, envelope)
            if named:  # one more subject holds an id a retraction names: a link across subjects may end
                lookback = _lookback(protocol)
                ae_signals += sae_retraction.new_holder(
                    records, envelope, named=named, lookback=lookback, topic=signals_topic
                )
                ae_signals += expedited_cases.reassess_holders(
                    session, records, envelope, protocol=protocol, signals_topic=signals_topic, now=now
                )
            taken_back = records.status(envelope.subject, "ae", envelope.data.ae_id)
            if taken_back is not None and taken_back.status in store.INACTIVE:  # a late version of one taken back
                ae_signals += expedited_cases.reassess_reentries(
                    session,
                    records,
                    envelope,
                    withdrawn_ae_id=envelope.data.ae_id,
                    named=taken_back.replaced_by,
                    protocol=protocol,
                    signals_topic=signals_topic,
                    now=now,
                )
            ae_signals += data_quality.seriousness_flags(envelope, topic=signals_topic)
        return changed, ae_signals
    if isinstance(envelope, TransfusionAdministered):
        return response_tracking.record_transfusion(session, envelope=envelope, now=now), []
    if isinstance(envelope, SampleCollected):
        return sample_tracking.record_sample(session, envelope=envelope, now=now), []
    if isinstance(envelope, RecordStatusChanged):
        data = envelope.data
        before = (
            records.status(envelope.subject, data.record_type, data.record_id)
            if data.record_type in ("ae", "vitals")
            else None
        )
        previous_status = before.status if before is not None else None  # read before the row is updated
        was_retracted = sae_retraction.standing_retraction(before)  # its reason, time and link, before the update
        if store.set_record_status(records, envelope=envelope) is None:
            return False, []  # older than the status on file: the site's later word stands
        if envelope.data.record_type == "lab":
            session.flush()
            return True, _lab_status_changed(session, records, envelope, protocol=protocol, signals_topic=signals_topic)
        if envelope.data.record_type == "vitals":  # its findings withdrawn, or news again when restored
            session.flush()
            was_active = previous_status not in store.INACTIVE
            return True, infusion_day.vitals_status_changed(
                session, envelope, was_active=was_active, protocol=protocol, signals_topic=signals_topic
            )
        if envelope.data.record_type == "ae":  # an AE taken back is no SAE and no SUSAR; restored, it is again
            sae = sae_retraction.status_changed(
                records,
                envelope,
                previous_status=previous_status,
                topic=signals_topic,
                lookback=_lookback(protocol),
                was_retracted=was_retracted,
            )
            if data.status in store.INACTIVE and previous_status not in store.INACTIVE:
                sae += retracted_dlt.confirmed_dlt_finding(session, envelope, topic=signals_topic)
            acute = acute_window.status_changed(
                session,
                records,
                envelope,
                previous_status=previous_status,
                protocol=protocol,
                now=now,
                signals_topic=signals_topic,
            )
            susar = expedited_cases.assess_ae_status(
                session, envelope, protocol=protocol, signals_topic=signals_topic, now=now, records=records
            )
            if (data.status in store.INACTIVE) != (previous_status in store.INACTIVE):  # the re-entries' day 0
                susar += expedited_cases.reassess_reentries(
                    session,
                    records,
                    envelope,
                    withdrawn_ae_id=data.record_id,
                    named=data.replaced_by if was_retracted is None else was_retracted.replaced_by,
                    protocol=protocol,
                    signals_topic=signals_topic,
                    now=now,
                )
            return True, sae + acute + susar
        return True, []
    raise PoisonMessage(f"unsupported clinical event {type(envelope).__name__}")


def _audit_correction(
    session: Session,
    envelope: DoseAdministered | LabResulted,
    *,
    kind: str,
    record_id: str,
    saved: store.Saved,
    now: datetime,
) -> None:
    """A re-sent record with other content replaced the stored one: the audit keeps what it said before."""
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=protocol_engine.SYSTEM_ACTOR,
        action=f"{kind}.corrected",
        entity=f"{kind}/{envelope.trialid}/{envelope.subject}/{record_id}",
        detail={"before": saved.before, "after": saved.after, "source_event_id": envelope.id},
        now=now,
    )


def _apply_lab(
    session: Session,
    records: BatchRecords,
    envelope: LabResulted,
    *,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
) -> tuple[bool, list[Outgoing]]:
    """Grade and store a result (or the site's correction of one); page when it is news.

    A result the site took back never pages and never sets the baseline, whichever arrived first: the
    result or its status.
    """
    data = envelope.data
    stored = store.load_lab(
        records,
        subject_id=envelope.subject,
        result_id=data.result_id,
        test=data.test,
        loinc=data.loinc,
        with_baseline=not data.baseline,
    )
    graded = grade_lab(
        data,
        baseline_value=stored.baseline_value,
        baseline_unit=stored.baseline_unit,
        population_max=protocol.data_quality.population_max,
    )
    saved, lab = store.save_lab(records, envelope=envelope, graded=graded, stored=stored.row)
    if not saved.changed:
        return False, []  # the same result re-sent under another delivery id
    alone = graded if stored.baseline_value is None else None  # graded on the record's own fields already
    flags = data_quality.lab_flags(envelope, protocol=protocol, topic=signals_topic, graded=alone)
    return True, _lab_news(session, records, envelope, graded, saved, lab, stored, protocol, signals_topic, now) + flags


def _lab_news(
    session: Session,
    records: BatchRecords,
    envelope: LabResulted,
    graded: Grade,
    saved: store.Saved,
    lab: LabResult,
    stored: store.StoredLab,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
) -> list[Outgoing]:
    """What a stored (new or corrected) result says: a page when it is news, a regrading of what it changed."""
    if saved.outcome == "corrected":
        _audit_correction(session, envelope, kind="lab", record_id=lab.result_id, saved=saved, now=now)
        terms = {t for t in (lab.term, saved.before.get("term")) if isinstance(t, str)}
        why = _correction_words(lab, saved)
        was = _graded_before(lab, term=saved.before.get("term", lab.term), grade=saved.before.get("grade", lab.grade))
        revised = lab.result_id if lab_revision.revises_shown(saved.before, lab) else None
        return _reassess_lab_terms(
            session, records, envelope, terms, why=why, protocol=protocol, topic=signals_topic, was=was, revised=revised
        )
    if lab.grade is None or lab.term is None or lab.result_id in stored.inactive:
        return []
    state = records.term_state(envelope.subject, lab.term)
    if lab.baseline:
        if state.baseline_collected_at is None or lab.collected_at >= state.baseline_collected_at:
            state.baseline_grade = lab.grade
            state.baseline_collected_at = lab.collected_at
        return _regrade_against_baseline(
            session,
            records,
            envelope,
            test=envelope.data.test,
            loinc=envelope.data.loinc,
            why=None,
            protocol=protocol,
            topic=signals_topic,
        )
    decision = decide(
        graded,
        is_baseline=False,
        threshold=protocol.lab_alerts.threshold(lab.term),
        baseline_grade=state.baseline_grade,
        signalled_grade=state.signalled_grade,
    )
    if not decision.signal:
        return []
    state.signalled_grade = lab.grade
    signal = _lab_signal(
        lab,
        state,
        baseline_grade=decision.baseline_grade,
        previous_grade=decision.previous_grade,
        site_id=envelope.siteid,
        source_event_id=envelope.id,
        received_at=envelope.receivedat,
        topic=signals_topic,
    )
    return [signal]


def _regrade_against_baseline(
    session: Session,
    records: BatchRecords,
    envelope: LabResulted | RecordStatusChanged,
    *,
    test: str | None,
    loinc: str | None,
    why: str | None,
    protocol: Protocol,
    topic: str,
    also: frozenset[str] = frozenset(),
) -> list[Outgoing]:
    """A baseline that arrives after results of its test, or is taken back or restored: the results are graded again
    against the latest active baseline (or none), as they would have been had it come first (a creatinine of 200
    umol/L is grade 2 by ULN but grade 3 at > 3 x a baseline of 60), and every term they grade is recomputed, since
    which of them are news (worse than baseline) moves with the baseline's grade even where no grade does (a count
    no worse than the screening one, entered later, no longer stands). Results graded as not gradable (an
    implausible value or range) are left as they are: what made them so is not all in the stored row. `why`: how the
    change is worded when a finding no longer stands (None: from the baseline that came). `also`: more terms."""
    baseline = records.latest_baseline(envelope.subject, test=test, loinc=loinc)
    inactive = records.inactive(envelope.subject, "lab")
    terms: set[str] = set(also)
    was: set[GradedBefore] = set()
    for lab in records.results_of_test(envelope.subject, test=test, loinc=loinc):
        if lab.result_id in inactive:
            continue
        if lab.term is not None:
            terms.add(lab.term)
        if lab.grade is None:
            continue
        regraded = grade_lab(
            LabData(
                result_id=lab.result_id,
                test=lab.test,
                loinc=lab.loinc,
                value=lab.value,
                unit=lab.unit,
                lln=Decimal(lab.lln) if lab.lln else None,
                uln=Decimal(lab.uln) if lab.uln else None,
                collected_at=lab.collected_at,
                anticoagulated=lab.anticoagulated,
            ),
            baseline_value=baseline.value if baseline is not None else None,
            baseline_unit=baseline.unit if baseline is not None else None,
            population_max=protocol.data_quality.population_max,
        )
        if (regraded.term, regraded.grade, regraded.floor) == (lab.term, lab.grade, lab.grade_floor):
            continue
        terms |= {t for t in (lab.term, regraded.term) if t is not None}
        was |= _graded_before(lab, term=lab.term, grade=lab.grade)
        lab.term, lab.grade, lab.grade_floor = regraded.term, regraded.grade, regraded.floor
        lab.grade_reason = regraded.reason[:1000]
    if not terms:
        return []
    session.flush()
    if why is None:
        named = f" {baseline.result_id}" if baseline is not None else ""
        why = f"graded again against the baseline result{named}, received after it"
    return _reassess_lab_terms(
        session, records, envelope, terms, why=why, protocol=protocol, topic=topic, was=frozenset(was)
    )


def _reassess_lab_terms(
    session: Session,
    records: BatchRecords,
    envelope: LabResulted | RecordStatusChanged,
    terms: set[str],
    *,
    why: str,
    protocol: Protocol,
    topic: str,
    was: frozenset[GradedBefore] = frozenset(),
    revised: str | None = None,
) -> list[Outgoing]:
    """The subject's terms this result changed, each recomputed from its active results, in term order."""
    return [
        signal
        for term in sorted(terms)
        for signal in _reassess_lab_term(
            session,
            records,
            subject_id=envelope.subject,
            term=term,
            site_id=envelope.siteid,
            source_event_id=envelope.id,
            received_at=envelope.receivedat,
            why=why,
            protocol=protocol,
            topic=topic,
            was=was,
            revised=revised,
        )
    ]


def _lab_status_changed(
    session: Session, records: BatchRecords, envelope: RecordStatusChanged, *, protocol: Protocol, signals_topic: str
) -> list[Outgoing]:
    """A result taken back or restored: its term is recomputed from the results still active; a baseline's, every
    result of its test graded again against the baseline that now stands (or none)."""
    lab = session.get(LabResult, (envelope.trialid, envelope.subject, envelope.data.record_id))
    if lab is None:
        return []  # the result has not arrived: it is judged, with its status, when it does
    data = envelope.data
    why = f"result {lab.result_id} marked {data.status.replace('_', ' ')} by the site" + (
        f" ({data.reason})" if data.reason else ""
    )
    if lab.baseline:
        return _regrade_against_baseline(
            session,
            records,
            envelope,
            test=lab.test,
            loinc=lab.loinc,
            why=why,
            protocol=protocol,
            topic=signals_topic,
            also=frozenset({lab.term} if lab.term is not None else ()),
        )
    if lab.term is None:
        return []
    return _reassess_lab_term(
        session,
        records,
        subject_id=envelope.subject,
        term=lab.term,
        site_id=envelope.siteid,
        source_event_id=envelope.id,
        received_at=envelope.receivedat,
        why=why,
        protocol=protocol,
        topic=signals_topic,
        was=_graded_before(lab, term=lab.term, grade=lab.grade) if data.status in store.INACTIVE else frozenset(),
    )


def _reassess_lab_term(
    session: Session,
    records: BatchRecords,
    *,
    subject_id: str,
    term: str,
    site_id: str,
    source_event_id: str,
    received_at: datetime,
    why: str,
    protocol: Protocol,
    topic: str,
    was: frozenset[GradedBefore] = frozenset(),
    revised: str | None = None,
) -> list[Outgoing]:
    """Recompute a term from its active results after one was taken back, restored or corrected.

    Baseline: the latest active baseline. Signalled: the worst active result that is news against that
    baseline, as if the officer had been told of it; a retracted result no longer counts, so the next real
    one at its grade pages. When that worst result is worse than what was signalled before (a restored
    result, one a retracted baseline had masked, a value corrected upwards), it pages now. When it is better
    (or none is left), the finding the officer was told of no longer stands, and they are told that (`why`):
    before, its review stayed open and escalated for a result the site had taken back. When it is as bad, but a
    result the change took from that grade (`was`: the results it changed, as graded before) may be the one that
    paged, the officer is told which result stands (`_same_grade_withdrawal`): before, the alert kept showing a value
    the site had taken back. So too when a correction kept its result at that grade but changed what an alert shows
    of it (`revised`: its id; `lab_revision`): the corrected result is named as the one that stands.
    """
    trial_id = records.trial_id
    state = store.refresh_baseline(session, records, subject_id=subject_id, term=term)
    previous = state.signalled_grade
    threshold = protocol.lab_alerts.threshold(term)
    news = [
        lab
        for lab in store.active_term_labs(session, trial_id=trial_id, subject_id=subject_id, term=term)
        if lab.grade is not None
        and decide(
            Grade(term, lab.grade, lab.grade_reason, None, None, floor=lab.grade_floor),
            is_baseline=lab.baseline,
            threshold=threshold,
            baseline_grade=state.baseline_grade,
            signalled_grade=None,
        ).signal
    ]
    worst = max(news, key=lambda lab: (lab.grade or 0, lab.collected_at), default=None)
    state.signalled_grade = worst.grade if worst is not None else None
    if previous is not None and (worst is None or (worst.grade or 0) < previous):
        withdrawal = _lab_withdrawal(
            state,
            withdrawn_grade=previous,
            standing=worst,
            why=why,
            site_id=site_id,
            source_event_id=source_event_id,
            received_at=received_at,
        )
        return [Outgoing(topic=topic, key=message_key(trial_id, subject_id), envelope=withdrawal)]
    if worst is not None and worst.grade == previous:
        moved = _same_grade_withdrawal(
            state,
            worst,
            news,
            was,
            revised=revised,
            why=why,
            site_id=site_id,
            source_event_id=source_event_id,
            received_at=received_at,
        )
        return [Outgoing(topic=topic, key=message_key(trial_id, subject_id), envelope=moved)] if moved else []
    if worst is None or (worst.grade or 0) <= (previous or 0):
        return []
    return [
        _lab_signal(
            worst,
            state,
            baseline_grade=state.baseline_grade,
            previous_grade=previous,
            site_id=site_id,
            source_event_id=source_event_id,
            received_at=received_at,
            topic=topic,
        )
    ]


def _lab_signal(
    lab: LabResult,
    state: LabTermState,
    *,
    baseline_grade: int | None,
    previous_grade: int | None,
    site_id: str,
    source_event_id: str,
    received_at: datetime,
    topic: str,
) -> Outgoing:
    """The term's next signal, numbered (`state.signals_raised`): a retraction or correction lowers the grade safety
    compares with, so after one a grade no worse than one already shown is news, which notify can tell only by the
    order safety raised them in, not by grades (a lane may bring an earlier signal later)."""
    if lab.grade is None or lab.term is None:
        raise ValueError("a lab toxicity signal needs a graded CTCAE term")
    state.signals_raised = (state.signals_raised or 0) + 1
    signal = LabToxicity(
        id=deterministic_id("signal", source_event_id, "lab.toxicity"),
        source=SIGNAL_SOURCE,
        subject=lab.subject_id,
        time=lab.collected_at,
        trialid=lab.trial_id,
        data=LabToxicityData(
            site_id=site_id,
            subject_id=lab.subject_id,
            result_id=lab.result_id,
            test=lab.test or lab.loinc or "",
            term=lab.term,
            grade=lab.grade,
            baseline_grade=baseline_grade,
            previous_grade=previous_grade,
            value=lab.value,
            unit=lab.unit,
            reason=lab.grade_reason,
            collected_at=lab.collected_at,
            source_event_id=source_event_id,
            floor=lab.grade_floor,
            received_at=received_at,
            sequence=state.signals_raised,
        ),
    )
    return Outgoing(topic=topic, key=message_key(lab.trial_id, lab.subject_id), envelope=signal)


class GradedBefore(NamedTuple):
    """A result as graded before the change being applied: the finding shown may have been its."""

    result_id: str
    term: str
    grade: int


def _graded_before(lab: LabResult, *, term: object, grade: object) -> frozenset[GradedBefore]:
    if isinstance(term, str) and isinstance(grade, int):
        return frozenset({GradedBefore(lab.result_id, term, grade)})
    return frozenset()


def _same_grade_withdrawal(
    state: LabTermState,
    worst: LabResult,
    news: Sequence[LabResult],
    was: frozenset[GradedBefore],
    *,
    revised: str | None = None,
    why: str,
    site_id: str,
    source_event_id: str,
    received_at: datetime,
) -> LabToxicityWithdrawn | None:
    """The grade signalled still stands, by `worst`; but a result graded so before the change no longer is (taken
    back, corrected or regraded): if it paged, the alert shows it. Safety does not keep which result paged (the first
    of the grade received), so it names the one gone when one is, and notify replaces it only where shown. Or the
    result `revised` (corrected, what an alert shows of it changed) was and is of that grade: it is named as both the
    one withdrawn and the one that stands, with its corrected values, so an alert showing it shows them. None when no
    result left the grade or was revised within it (one of another grade taken back, a unit rewritten)."""
    if worst.grade is None:
        return None
    standing = {lab.result_id: lab for lab in news if lab.grade == worst.grade}
    graded = {g.result_id for g in was if g.term == state.term and g.grade == worst.grade}
    gone = sorted(graded - standing.keys())
    kept = standing.get(revised) if revised is not None and revised in graded and not gone else None
    if not gone and kept is None:
        return None
    return _lab_withdrawal(
        state,
        withdrawn_grade=worst.grade,
        standing=kept or worst,
        why=why,
        site_id=site_id,
        source_event_id=source_event_id,
        received_at=received_at,
        withdrawn_result_id=kept.result_id if kept is not None else gone[0] if len(gone) == 1 else None,
    )


def _lab_withdrawal(
    state: LabTermState,
    *,
    withdrawn_grade: int,
    standing: LabResult | None,
    why: str,
    site_id: str,
    source_event_id: str,
    received_at: datetime,
    withdrawn_result_id: str | None = None,
) -> LabToxicityWithdrawn:
    """The grade signalled no longer stands, or (`withdrawn_result_id`, the grade standing) the result that paged it
    does not. It takes no number of its own: it carries that of the last finding it withdraws, so the findings numbered
    after it are news and the ones up to it are not (notify)."""
    return LabToxicityWithdrawn(
        id=deterministic_id("signal", source_event_id, "lab.toxicity_withdrawn", state.term),
        source=SIGNAL_SOURCE,
        subject=state.subject_id,
        time=received_at,
        trialid=state.trial_id,
        data=LabToxicityWithdrawalData(
            site_id=site_id,
            subject_id=state.subject_id,
            term=state.term,
            withdrawn_grade=withdrawn_grade,
            standing_grade=standing.grade if standing is not None else None,
            standing_result_id=standing.result_id if standing is not None else None,
            why=why[:1000],
            source_event_id=source_event_id,
            received_at=received_at,
            sequence=state.signals_raised or 0,
            withdrawn_result_id=withdrawn_result_id,
            standing_result=_standing_result(standing) if standing is not None else None,
        ),
    )


def _standing_result(lab: LabResult) -> StandingResult:
    return StandingResult(
        test=lab.test or lab.loinc or "",
        value=lab.value,
        unit=lab.unit,
        collected_at=lab.collected_at,
        reason=lab.grade_reason,
        floor=lab.grade_floor,
    )


_CORRECTED_FIELDS = {
    "test": "test",
    "loinc": "LOINC code",
    "lln": "lower limit of normal",
    "uln": "upper limit of normal",
    "collected_at": "collection time",
    "baseline": "baseline flag",
    "anticoagulated": "anticoagulation",
}


def _correction_words(lab: LabResult, saved: store.Saved) -> str:
    """What the site's correction changed, for the officer: the value and unit it replaced, else the fields in words
    (the value and unit are not repeated when they stand: '10 10^9/L -> 10 10^9/L' read as no change at all)."""
    before, after = saved.before, saved.after
    old = f"{before.get('value', lab.value)} {before.get('unit', lab.unit) or ''}".strip()
    new = f"{after.get('value', lab.value)} {after.get('unit', lab.unit) or ''}".strip()
    if old != new:
        return f"result {lab.result_id} corrected by the site: {old} -> {new}"
    changed = [words for name, words in _CORRECTED_FIELDS.items() if name in before]
    return f"result {lab.result_id} corrected by the site: its {', '.join(changed) or 'grading'} changed"


def _lookback(protocol: Protocol) -> timedelta:
    return timedelta(hours=protocol.sae.reentry_lookback_hours)


def _apply_ae(
    records: BatchRecords, envelope: AeReported, *, protocol: Protocol, signals_topic: str
) -> tuple[bool, list[Outgoing]]:
    ae = envelope.data
    keys = {"subject_id": envelope.subject, "ae_id": ae.ae_id}
    stored = store.load_ae(records, **keys, version=ae.version)
    if stored.has_version:  # this version was already applied: re-sent under another delivery id
        return False, _conflicting_resend(records, envelope, topic=signals_topic)
    taken_back = ae.ae_id in records.inactive(envelope.subject, "ae")
    assessment = assess_ae(stored.state, ae, received_at=envelope.receivedat, taken_back=taken_back)
    quality = [f"{flag.code}: {flag.message}" for flag in check_ae(ae.ctcae_term or ae.term, ae.grade, ae.meddra_code)]
    store.add_ae_version(records, envelope=envelope, flags=(*assessment.flags, *quality))
    store.save_sae_state(records, **keys, state=assessment.state)
    lookback = _lookback(protocol)
    if taken_back:  # stored, never paged: the site's retraction stands until it restores the AE
        return True, sae_retraction.version_while_taken_back(records, envelope, topic=signals_topic, lookback=lookback)
    if assessment.signal is None:
        return True, _replacing_a_serious_ae(records, envelope, serious=assessment.state.serious, topic=signals_topic)
    # a re-entry of a serious AE the site took back keeps that AE's (earlier) clock
    state, link = sae_retraction.reentry_clock(
        records, subject_id=envelope.subject, ae_id=ae.ae_id, state=assessment.state, lookback=lookback
    )
    clock_from = link.withdrawn.ae_id if link is not None else None
    signal = sae_signal(envelope, replace(assessment, state=state), clock_from_ae_id=clock_from)
    out = [Outgoing(topic=signals_topic, key=message_key(envelope.trialid, envelope.subject), envelope=signal)]
    if link is not None and assessment.signal is SaeSignalKind.DETECTED:
        own = assessment.state
        out.append(
            sae_retraction.reentry_finding(
                envelope, ae_id=ae.ae_id, own=own, link=link, lookback=lookback, topic=signals_topic
            )
        )
    return True, out


def _replacing_a_serious_ae(
    records: BatchRecords, envelope: AeReported, *, serious: bool, topic: str
) -> list[Outgoing]:
    """A non-serious AE the site named as the replacement of a serious AE it took back (see
    `sae_retraction.non_serious_replacement`); a subject with no retraction costs one dictionary scan."""
    if serious:
        return []
    out: list[Outgoing] = []
    for ae_id in sorted(records.inactive(envelope.subject, "ae")):
        status = records.status(envelope.subject, "ae", ae_id)
        if status is not None and status.replaced_by == envelope.data.ae_id:
            out += sae_retraction.non_serious_replacement(records, envelope, withdrawn_ae_id=ae_id, topic=topic)
    return out


def _conflicting_resend(records: BatchRecords, envelope: AeReported, *, topic: str) -> list[Outgoing]:
    """A version re-sent with other content: the first content received stands (a version is what the sponsor
    received, once), and the site is told, so a change (perhaps new seriousness) comes back as a new version
    instead of vanishing."""
    ae = envelope.data
    stored = next(
        (v for v in records.ae_versions_of(envelope.subject) if v.ae_id == ae.ae_id and v.version == ae.version), None
    )
    if stored is None:
        return []
    sent = ae.model_dump(mode="json")
    fields = sorted(k for k in set(stored.payload) | set(sent) if stored.payload.get(k) != sent.get(k))
    if not fields:
        return []  # the same version, the same content: a plain re-delivery
    added = sorted(criteria_of(ae) - criteria_of(AeData.model_validate(stored.payload)))
    serious = f" It adds seriousness ({', '.join(added)}): an SAE may be unreported." if added else ""
    detail = (
        f"AE {ae.ae_id} version {ae.version} was sent again with other content ({', '.join(fields)}); the content "
        f"first received stands. Send the change as a new version of the AE.{serious}"
    )
    code = data_quality.CONFLICTING_RESEND
    return [data_quality.flag(envelope, record_type="ae", record_id=ae.ae_id, code=code, detail=detail, topic=topic)]


def sae_signal(
    envelope: AeReported, assessment: SaeAssessment, *, clock_from_ae_id: str | None = None
) -> SaeDetected | SaeUpdated:
    data = sae_data(
        envelope,
        envelope.data,
        version=envelope.data.version,
        state=assessment.state,
        clock_from_ae_id=clock_from_ae_id,
    )
    kind = assessment.signal
    common = {
        "id": deterministic_id("signal", envelope.id, str(kind)),
        "source": SIGNAL_SOURCE,
        "subject": envelope.subject,
        "time": envelope.receivedat,
        "trialid": envelope.trialid,
        "data": data,
    }
    if kind is SaeSignalKind.DETECTED:
        return SaeDetected.model_validate(common)
    return SaeUpdated.model_validate(common)
