"""Safety's infusion-day and visit-review layer: store vital signs and AE review records, signal the CTCAE
findings graded from vitals (as lab toxicities) and withdraw those a set corrected or taken back no longer gives
(as lab findings are withdrawn), grading again the readings whose grade depends on the set (`vitals.judge_change`),
and, from the sweep, flag infusions whose observation period ended with monitoring slots missing (as missed
assessments). The rules are in `vitals.py`.

Keyword-only; never commit (the caller's transaction does).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, col, select

from services.safety import store
from services.safety.assessments import ReviewMark
from services.safety.models import AeReview, Dose, MissedAssessment, Subject, VitalSigns
from services.safety.vitals import (
    Judgement,
    News,
    Reading,
    Withdrawal,
    check_due,
    correction_words,
    gaps,
    judge_change,
    monitoring_incomplete,
    recorded_words,
    regrade_words,
)
from shared.clock import utc
from shared.events import (
    VITAL_SIGN_NAMES,
    AeReviewRecorded,
    AssessmentMissed,
    AssessmentMissedData,
    LabToxicity,
    LabToxicityData,
    LabToxicityWithdrawalData,
    LabToxicityWithdrawn,
    RecordStatusChanged,
    StandingResult,
    VitalsRecorded,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol

SIGNAL_SOURCE = "/services/safety"
GAP_LOOKBACK = timedelta(days=30)
"""Infusions older than this are not re-checked by the sweep (bounded work; a gap is flagged long before)."""
VITALS_CONTENT = (*VITAL_SIGN_NAMES, "measured_at", "dose_id")


def apply_vitals(
    session: Session, envelope: VitalsRecorded, *, protocol: Protocol, signals_topic: str
) -> tuple[bool, list[Outgoing]]:
    """Store a set of vitals (a re-send with other values is the site's correction) and signal what the change does
    (`vitals.judge_change`): what is news, the findings the set (or a reading graded with it) no longer gives. A set
    the site took back signals nothing."""
    data = envelope.data
    keys = (envelope.trialid, envelope.subject, data.vitals_id)
    new = VitalSigns(
        trial_id=envelope.trialid,
        subject_id=envelope.subject,
        vitals_id=data.vitals_id,
        measured_at=data.measured_at,
        dose_id=data.dose_id,
        event_id=envelope.id,
        received_at=envelope.receivedat,
        **{name: _text(getattr(data, name)) for name in VITAL_SIGN_NAMES},
    )
    stored = session.get(VitalSigns, keys)
    if stored is not None and all(_same(getattr(stored, n), getattr(new, n)) for n in VITALS_CONTENT):
        return False, []
    before = _reading(stored) if stored is not None else None  # as the set stood, before the correction
    if stored is None:
        session.add(new)
    else:
        for name in (*VITALS_CONTENT, "event_id", "received_at"):
            setattr(stored, name, getattr(new, name))
        session.add(stored)
    session.flush()
    rules = protocol.infusion_vitals
    if rules is None:
        return True, []
    history = subject_readings(session, trial_id=envelope.trialid, subject_id=envelope.subject)
    reading = next((r for r in history if r.vitals_id == data.vitals_id), None)
    if reading is None:  # taken back by the site (its status came first): stored, never signalled
        return True, []
    # active now and not taken back by this event: active before it too, as `before` (a correction) or not at all
    earlier = [r for r in history if r.vitals_id != data.vitals_id] + ([before] if before is not None else [])
    why = correction_words(before, reading) if before is not None else recorded_words(reading)
    judged = judge_change(data.vitals_id, earlier, history, rules=rules)
    return True, _signals(envelope, data.vitals_id, judged, why=why, topic=signals_topic)


def vitals_status_changed(
    session: Session, envelope: RecordStatusChanged, *, was_active: bool, protocol: Protocol, signals_topic: str
) -> list[Outgoing]:
    """A vitals set taken back withdraws the findings it gave (the review of a fever the nurse entered under the
    wrong patient stops); restored, what it gives is news again, as for a lab result. Either way the readings graded
    with it are graded again (`vitals.judge_change`). `was_active`: before this status (a retraction re-sent
    withdraws nothing more)."""
    data = envelope.data
    rules = protocol.infusion_vitals
    row = session.get(VitalSigns, (envelope.trialid, envelope.subject, data.record_id))
    if rules is None or row is None:
        return []  # the set has not arrived: it is judged, with its status, when it does
    history = subject_readings(session, trial_id=envelope.trialid, subject_id=envelope.subject)
    active = any(r.vitals_id == data.record_id for r in history)
    if active == was_active:
        return []  # still active, or still taken back: nothing changed for its findings
    earlier = [r for r in history if r.vitals_id != data.record_id] + ([] if active else [_reading(row)])
    why = f"vitals set {data.record_id} marked {data.status.replace('_', ' ')} by the site" + (
        f" ({data.reason})" if data.reason else ""
    )
    judged = judge_change(data.record_id, earlier, history, rules=rules)
    return _signals(envelope, data.record_id, judged, why=why, topic=signals_topic)


def _signals(
    source: VitalsRecorded | RecordStatusChanged, vitals_id: str, judged: Judgement, *, why: str, topic: str
) -> list[Outgoing]:
    """The withdrawals, then the news, of a change to set `vitals_id` (`why`: the change, in words); a reading
    graded with it says so."""
    signals = [
        _withdrawal(source, taken, w, why=why, topic=topic)
        if taken.vitals_id == vitals_id
        else _withdrawal(source, taken, w, why=regrade_words(why, taken), topic=topic, regraded=True)
        for taken, w in judged.withdrawn
    ]
    return signals + [
        _finding(source, item, topic=topic, again=None if item.reading.vitals_id == vitals_id else why)
        for item in judged.news
    ]


def _finding(source: VitalsRecorded | RecordStatusChanged, item: News, *, topic: str, again: str | None) -> Outgoing:
    """A finding that is news, signalled as a lab toxicity raised by `source` (its receipt starts the review clock).
    `again`: the change to another set that graded this reading again (None: the set's own)."""
    reading, finding = item.reading, item.finding
    reason = f"vital signs: {finding.reason}" + (f" (graded again: {again})" if again is not None else "")
    named = [] if again is None else [reading.vitals_id]
    signal = LabToxicity(
        id=deterministic_id("signal", source.id, "vitals", *named, finding.term),
        source=SIGNAL_SOURCE,
        subject=source.subject,
        time=reading.measured_at,
        trialid=source.trialid,
        data=LabToxicityData(
            site_id=source.siteid,
            subject_id=source.subject,
            result_id=reading.vitals_id,
            test=finding.test,
            term=finding.term,
            grade=finding.grade,
            baseline_grade=None,
            previous_grade=item.previous,
            value=finding.value,
            unit=finding.unit,
            reason=reason,
            collected_at=reading.measured_at,
            source_event_id=source.id,
            floor=finding.floor,
            received_at=source.receivedat,
            measured_by="vitals",
        ),
    )
    return Outgoing(topic=topic, key=message_key(source.trialid, source.subject), envelope=signal)


def _withdrawal(
    source: VitalsRecorded | RecordStatusChanged,
    taken: Reading,
    withdrawal: Withdrawal,
    *,
    why: str,
    topic: str,
    regraded: bool = False,
) -> Outgoing:
    """A finding of set `taken` withdrawn, as a lab finding is (`lab.toxicity_withdrawn`). Vitals findings are not
    numbered (sequence 0): it names the set (`withdrawn_result_id`), and notify withdraws it only from an alert that
    shows that set's finding, received before this change. `regraded`: `taken` is not the set changed but a reading
    graded with it (its grade 4 read a run the change broke): named itself, as the alert shows it if it paged."""
    finding, standing = withdrawal.finding, withdrawal.standing
    shown = None
    if standing is not None:
        reading, kept = standing
        shown = StandingResult(
            test=kept.test,
            value=kept.value,
            unit=kept.unit,
            collected_at=reading.measured_at,
            reason=f"vital signs: {kept.reason}",
            floor=kept.floor,
            measured_by="vitals",
        )
    named = [taken.vitals_id] if regraded else []
    signal = LabToxicityWithdrawn(
        id=deterministic_id("signal", source.id, "vitals", "lab.toxicity_withdrawn", *named, finding.term),
        source=SIGNAL_SOURCE,
        subject=source.subject,
        time=source.receivedat,
        trialid=source.trialid,
        data=LabToxicityWithdrawalData(
            site_id=source.siteid,
            subject_id=source.subject,
            term=finding.term,
            withdrawn_grade=finding.grade,
            standing_grade=standing[1].grade if standing is not None else None,
            standing_result_id=standing[0].vitals_id if standing is not None else None,
            why=why[:1000],
            source_event_id=source.id,
            received_at=source.receivedat,
            sequence=0,
            withdrawn_result_id=taken.vitals_id,
            standing_result=shown,
        ),
    )
    return Outgoing(topic=topic, key=message_key(source.trialid, source.subject), envelope=signal)


def _text(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def _same(a: object, b: object) -> bool:
    return (utc(a) == utc(b)) if isinstance(a, datetime) and isinstance(b, datetime) else a == b


def subject_readings(session: Session, *, trial_id: str, subject_id: str) -> list[Reading]:
    """The subject's active vitals, oldest first."""
    inactive = store.inactive_records(session, trial_id=trial_id, subject_id=subject_id, record_type="vitals")
    rows = session.exec(
        select(VitalSigns)
        .where(VitalSigns.trial_id == trial_id, VitalSigns.subject_id == subject_id)
        .order_by(col(VitalSigns.measured_at))
    )
    return [_reading(row) for row in rows if row.vitals_id not in inactive]


def _reading(row: VitalSigns) -> Reading:
    signs = {name: Decimal(value) for name in VITAL_SIGN_NAMES if (value := getattr(row, name)) is not None}
    return Reading(row.vitals_id, utc(row.measured_at), signs)


def apply_ae_review(session: Session, envelope: AeReviewRecorded) -> bool:
    """Store the visit's AE review; a re-send with other content is the site's correction."""
    data = envelope.data
    stored = session.get(AeReview, (envelope.trialid, envelope.subject, data.review_id))
    if stored is not None and (
        _same(stored.assessed_at, data.assessed_at) and stored.visit == data.visit and stored.new_aes == data.new_aes
    ):
        return False
    row = stored or AeReview(
        trial_id=envelope.trialid,
        subject_id=envelope.subject,
        review_id=data.review_id,
        assessed_at=data.assessed_at,
        event_id=envelope.id,
        received_at=envelope.receivedat,
    )
    row.assessed_at, row.visit, row.new_aes = data.assessed_at, data.visit, data.new_aes
    row.event_id, row.received_at = envelope.id, envelope.receivedat
    session.add(row)
    return True


def review_marks(session: Session, *, trial_id: str) -> dict[str, list[ReviewMark]]:
    """subject -> the active AE review records, for the sweep's visit checks."""
    inactive = store.inactive_in_trial(session, trial_id=trial_id, record_type="ae_review")
    marks: dict[str, list[ReviewMark]] = defaultdict(list)
    for row in session.exec(select(AeReview).where(AeReview.trial_id == trial_id)):
        if (row.subject_id, row.review_id) not in inactive:
            marks[row.subject_id].append(ReviewMark(utc(row.assessed_at), row.visit))
    return marks


def gap_assessment_name(dose: Dose) -> str:
    return f"infusion {dose.number} vital signs"


def flag_vitals_gaps(session: Session, *, protocol: Protocol, now: datetime, signals_topic: str) -> list[Outgoing]:
    """Sweep step: each infusion whose observation (and data-entry grace) ended by `now` with more monitoring
    slots incomplete than the protocol allows is flagged once, as a missed assessment naming the slots."""
    rules = protocol.infusion_vitals
    if rules is None:
        return []
    trial_id = protocol.trial_id
    flagged = store.flagged_assessments(session, trial_id=trial_id)
    inactive_doses = store.inactive_in_trial(session, trial_id=trial_id, record_type="dose")
    recent = session.exec(
        select(Dose).where(Dose.trial_id == trial_id, col(Dose.administered_at) >= now - GAP_LOOKBACK)
    )
    readings: dict[str, list[Reading]] = {}
    signals: list[Outgoing] = []
    for dose in sorted(recent, key=lambda d: (d.subject_id, d.administered_at)):
        name = gap_assessment_name(dose)
        started = utc(dose.administered_at)
        if (dose.subject_id, dose.dose_id) in inactive_doses or (dose.subject_id, name) in flagged:
            continue
        if not check_due(started, rules=rules, now=now):
            continue
        if dose.subject_id not in readings:
            readings[dose.subject_id] = subject_readings(session, trial_id=trial_id, subject_id=dose.subject_id)
        found = gaps(started, readings[dose.subject_id], rules=rules)
        if not monitoring_incomplete(found, rules=rules):
            continue
        subject = session.get(Subject, (trial_id, dose.subject_id))
        due_until = started + timedelta(minutes=rules.infusion_minutes + rules.observe_after_minutes)
        missing = [gap.describe() for gap in found]
        session.add(
            MissedAssessment(
                trial_id=trial_id,
                subject_id=dose.subject_id,
                assessment=name,
                due_from=started,
                due_until=due_until,
                missing=missing,
                flagged_at=now,
            )
        )
        signal = AssessmentMissed(
            id=deterministic_id("signal", "assessment.missed", trial_id, dose.subject_id, name),
            source=SIGNAL_SOURCE,
            subject=dose.subject_id,
            time=now,
            trialid=trial_id,
            data=AssessmentMissedData(
                site_id=subject.site_id if subject is not None else "",
                subject_id=dose.subject_id,
                assessment=name,
                due_from=started,
                due_until=due_until,
                missing=missing,
            ),
        )
        signals.append(Outgoing(topic=signals_topic, key=message_key(trial_id, dose.subject_id), envelope=signal))
    return signals
