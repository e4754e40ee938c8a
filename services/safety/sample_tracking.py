"""Safety's queries and writes for protocol samples (immunology at baseline and weeks 1, 4, 8): store each sample
collected, and flag each sample visit missed once, to the site (the sweep's part; pure rule in `samples`).
Data functions are keyword-only and never commit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session, select

from services.safety import protocol_engine, store
from services.safety.dlt_window import StudyCalendar
from services.safety.models import MissedAssessment, SampleRecord, Subject, SubjectOutcomeRow
from services.safety.samples import missed_samples, sample_visits
from services.safety.site_records import save_site_record
from shared.events import AssessmentMissed, AssessmentMissedData, SampleCollected, deterministic_id, message_key
from shared.outbox import Outgoing
from shared.protocol import Protocol


def record_sample(session: Session, *, envelope: SampleCollected, now: datetime) -> bool:
    """Store a sample collected (a re-send with other content corrects it, audited); whether anything changed."""
    s = envelope.data
    new = SampleRecord(
        trial_id=envelope.trialid,
        subject_id=envelope.subject,
        sample_id=s.sample_id,
        kind=s.kind,
        collected_at=s.collected_at,
        visit=s.visit,
    )
    return save_site_record(
        session,
        row=session.get(SampleRecord, (envelope.trialid, envelope.subject, s.sample_id)),
        new=new,
        fields=("kind", "collected_at", "visit"),
        entity=f"sample/{envelope.trialid}/{envelope.subject}/{s.sample_id}",
        source_event_id=envelope.id,
        now=now,
    )


def _left_study_at(session: Session, *, subject: Subject, calendar: StudyCalendar) -> datetime | None:
    """When the subject left the study (the start of the status's site day); with no date given, nothing more is
    asked of a subject no longer on study."""
    row = session.get(SubjectOutcomeRow, (subject.trial_id, subject.subject_id))
    if row is None or row.study_status == "on_study":
        return None
    if row.study_status_on is None:
        return datetime.min.replace(tzinfo=UTC)
    return calendar.day_starts(row.study_status_on)


def flag_missed_samples(
    session: Session,
    *,
    protocol: Protocol,
    now: datetime,
    signals_topic: str,
    subject: Subject,
    flagged: set[str],
) -> list[Outgoing]:
    """The subject's sample visits missed by `now`, each recorded and signalled once (to the site)."""
    if not protocol.samples:
        return []
    window = protocol_engine.window_of(session, protocol=protocol, subject=subject)
    if window is None:
        return []
    keys = {"trial_id": subject.trial_id, "subject_id": subject.subject_id}
    inactive = store.inactive_records(session, **keys, record_type="sample")
    rows = [
        r
        for r in session.exec(
            select(SampleRecord).where(
                SampleRecord.trial_id == subject.trial_id, SampleRecord.subject_id == subject.subject_id
            )
        )
        if r.sample_id not in inactive
    ]
    signals: list[Outgoing] = []
    left = _left_study_at(session, subject=subject, calendar=window.calendar)
    for schedule in protocol.samples:
        visits = sample_visits(schedule, calendar=window.calendar, first_infusion=window.anchor)
        collected = [r.collected_at for r in rows if schedule.kind.casefold() in r.kind.casefold()]
        for miss in missed_samples(visits, now=now, collected=collected, flagged=flagged, left_study_at=left):
            visit = miss.visit
            session.add(
                MissedAssessment(
                    **keys,
                    assessment=visit.name,
                    due_from=visit.due_from,
                    due_until=visit.due_until,
                    missing=miss.missing,
                    flagged_at=now,
                )
            )
            signal = AssessmentMissed(
                id=deterministic_id("signal", "assessment.missed", subject.trial_id, subject.subject_id, visit.name),
                source=protocol_engine.SIGNAL_SOURCE,
                subject=subject.subject_id,
                time=now,
                trialid=subject.trial_id,
                data=AssessmentMissedData(
                    site_id=subject.site_id,
                    subject_id=subject.subject_id,
                    assessment=visit.name,
                    due_from=visit.due_from,
                    due_until=visit.due_until,
                    missing=miss.missing,
                    category="sample",
                ),
            )
            signals.append(
                Outgoing(topic=signals_topic, key=message_key(subject.trial_id, subject.subject_id), envelope=signal)
            )
    return signals


def sweep(session: Session, *, protocol: Protocol, now: datetime, signals_topic: str) -> list[Outgoing]:
    """Sample visits missed by `now`, for every subject dosed and still enrolled; each flagged once."""
    if not protocol.samples:
        return []
    trial_id = protocol.trial_id
    signals: list[Outgoing] = []
    flagged = store.flagged_assessments(session, trial_id=trial_id)
    withdrawn = store.inactive_in_trial(session, trial_id=trial_id, record_type="enrollment")
    for subject in store.subjects(session, trial_id=trial_id):
        sid = subject.subject_id
        if subject.arm is None or (sid, sid) in withdrawn:
            continue
        signals += flag_missed_samples(
            session,
            protocol=protocol,
            now=now,
            signals_topic=signals_topic,
            subject=subject,
            flagged={name for (owner, name) in flagged if owner == sid},
        )
    return signals
