"""Safety's queries and writes for transfusions and the haematological response.

Kept apart from the DLT engine: `record_transfusion` stores a transfusion, `reassess` recomputes a subject's
response (pure rule in `response`) on every datum that can change it and at the protocol's timepoints, storing
it and signalling a loss once; `sweep` records the timepoints that passed with time alone.
Data functions are keyword-only and never commit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlmodel import Session, select

from services.safety import protocol_engine, site_records, store
from services.safety.ctcae import grade_value, terms_for_test
from services.safety.models import (
    LabResult,
    ResponseStateRow,
    Subject,
    TransfusionRecord,
)
from services.safety.response import (
    Count,
    ResponseAssessment,
    Transfusion,
    assess_response,
    count_levels,
    response_loss,
    unseen_loss,
)
from services.safety.subject_store import LabFacts, SubjectState
from shared.events import (
    ResponseData,
    ResponseLevel,
    ResponseLost,
    TransfusionAdministered,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol, ResponseRules
from shared.rows import new_row

CURRENT = "current"
CENSOR_MARGIN = Decimal("0.000000001")
"""'<5' is read as just under 5 (and '>1000' just over): an upper (lower) bound decides a level when the
bound is on the same side of the threshold, which is how labs censor counts (far from the thresholds)."""


def record_transfusion(session: Session, *, envelope: TransfusionAdministered, now: datetime) -> bool:
    """Store a transfusion (a re-send with other content corrects it, audited); whether anything changed."""
    t = envelope.data
    new = TransfusionRecord(
        trial_id=envelope.trialid,
        subject_id=envelope.subject,
        transfusion_id=t.transfusion_id,
        product=t.product,
        administered_at=t.administered_at,
        units=str(t.units) if t.units is not None else None,
        volume_ml=str(t.volume_ml) if t.volume_ml is not None else None,
    )
    row = session.get(TransfusionRecord, (envelope.trialid, envelope.subject, t.transfusion_id))
    return site_records.save_site_record(
        session,
        row=row,
        new=new,
        fields=("product", "administered_at", "units", "volume_ml"),
        entity=f"transfusion/{envelope.trialid}/{envelope.subject}/{t.transfusion_id}",
        source_event_id=envelope.id,
        now=now,
    )


def _si_value(term: str, lab: LabResult | LabFacts) -> Decimal | None:
    return _si_of(term, lab.value, lab.unit)


@functools.lru_cache(maxsize=8192)
def _si_of(term: str, value: str, unit: str | None) -> Decimal | None:
    """Cached: a subject's counts are rebuilt from all its results at every reassessment, and what a stored
    value and unit mean in SI never changes."""
    text = value.strip()
    shift = Decimal(0)
    if text[:1] in "<>":
        shift = -CENSOR_MARGIN if text[0] == "<" else CENSOR_MARGIN
        text = text.lstrip("<>=").strip()
    try:
        Decimal(text)
    except InvalidOperation:
        return None
    graded = grade_value(term, text, unit)
    return graded.value_si + shift if graded.value_si is not None else None


def blood_counts(session: Session, *, rules: ResponseRules, trial_id: str, subject_id: str) -> list[Count]:
    inactive = store.inactive_records(session, trial_id=trial_id, subject_id=subject_id, record_type="lab")
    return counts_of(rules, store.labs(session, trial_id=trial_id, subject_id=subject_id), inactive=inactive)


def counts_of(
    rules: ResponseRules, labs: Iterable[LabResult | LabFacts], *, inactive: Mapping[str, str]
) -> list[Count]:
    """The subject's active results of the protocol's lineages, in SI units, grouped into blood counts: results
    collected within `count_within_minutes` of a count's first result belong to it (one draw, times typed a few
    minutes apart), unless its lineage is already there (a repeat is a new count)."""
    lineage_of = {lineage.term: name for name, lineage in rules.lineages.items()}
    of_test: dict[str, tuple[str, str] | None] = {}  # a test's (CTCAE term, lineage), looked up once per test
    readings: list[tuple[datetime, str, Decimal]] = []
    for lab in labs:
        # by the test, not the stored term: a high haemoglobin is graded "Hemoglobin increased" yet is a count
        test = lab.test or lab.loinc or ""
        if test not in of_test:
            term = next((t for t in terms_for_test(test) if t in lineage_of), None)
            of_test[test] = (term, lineage_of[term]) if term is not None else None
        found = of_test[test]
        if found is None or lab.result_id in inactive:
            continue
        value = _si_value(found[0], lab)
        if value is not None:
            readings.append((lab.collected_at, found[1], value))
    tolerance = timedelta(minutes=rules.count_within_minutes)
    counts: list[tuple[datetime, dict[str, Decimal]]] = []
    for at, lineage, value in sorted(readings):
        if counts and at - counts[-1][0] <= tolerance and lineage not in counts[-1][1]:
            counts[-1][1][lineage] = value
        else:
            counts.append((at, {lineage: value}))
    return [Count(at, values) for at, values in counts]


def transfusions(session: Session, *, trial_id: str, subject_id: str) -> list[Transfusion]:
    inactive = store.inactive_records(session, trial_id=trial_id, subject_id=subject_id, record_type="transfusion")
    rows = session.exec(
        select(TransfusionRecord).where(
            TransfusionRecord.trial_id == trial_id, TransfusionRecord.subject_id == subject_id
        )
    )
    return transfusions_of(rows, inactive=inactive)


def transfusions_of(rows: Iterable[TransfusionRecord], *, inactive: Mapping[str, str]) -> list[Transfusion]:
    return [Transfusion(r.administered_at, r.product) for r in rows if r.transfusion_id not in inactive]


@dataclass(frozen=True)
class SubjectResponse:
    current: ResponseAssessment
    timepoints: dict[str, tuple[datetime, ResponseAssessment]]
    """Timepoint name -> (its moment, the response as of then), for the timepoints passed by `now`."""


def assess_subject(
    session: Session, *, protocol: Protocol, subject: Subject, now: datetime, state: SubjectState | None = None
) -> SubjectResponse | None:
    """The subject's response now and at each protocol timepoint passed (None: the protocol has no response).

    `state`: the subject as already loaded by the caller (the consumer's batch), else read here."""
    rules = protocol.response
    if rules is None:
        return None
    if state is None:
        keys = {"trial_id": subject.trial_id, "subject_id": subject.subject_id}
        counts = blood_counts(session, rules=rules, **keys)
        given = transfusions(session, **keys)
        window = protocol_engine.window_of(session, protocol=protocol, subject=subject) if rules.timepoints else None
    else:
        counts = counts_of(rules, state.labs, inactive=state.inactive_ids("lab"))
        given = transfusions_of(state.transfusions, inactive=state.inactive_ids("transfusion"))
        window = protocol_engine.subject_window(protocol, state) if rules.timepoints else None
    levels = count_levels(rules, counts)  # once for every moment assessed
    points: dict[str, tuple[datetime, ResponseAssessment]] = {}
    if window is not None:
        for point in rules.timepoints:
            moment = window.calendar.day_ends(window.calendar.date_of(point.day))
            if moment <= now:
                assessed = assess_response(rules, counts=counts, transfusions=given, now=moment, levels=levels)
                points[point.name] = (moment, assessed)
    current = assess_response(rules, counts=counts, transfusions=given, now=now, levels=levels)
    return SubjectResponse(current, points)


def _store_state(
    session: Session,
    *,
    stored: dict[str, ResponseStateRow],
    subject: Subject,
    point: str,
    as_of: datetime,
    result: ResponseAssessment,
    now: datetime,
) -> ResponseStateRow | None:
    """Upsert one response row when the decision changed (a re-run with nothing new writes nothing); returns the
    row as it was before (None if new). `stored`: the subject's rows by point, kept up to date here."""
    row = stored.get(point)
    before = row.model_copy() if row is not None else None
    decided = {
        "level": result.level,
        "since": result.since,
        "confirmed_at": result.confirmed_at,
        "awaiting": result.awaiting,
        "reason": result.reason[:2000],
    }
    if row is not None and all(
        store._comparable(getattr(row, name)) == store._comparable(value) for name, value in decided.items()
    ):
        return before
    duration = str(result.duration_days) if result.duration_days is not None else None
    if row is None:  # its values given whole: a field set on a row costs SQLAlchemy's and pydantic's bookkeeping
        row = new_row(
            ResponseStateRow,
            trial_id=subject.trial_id,
            subject_id=subject.subject_id,
            point=point,
            as_of=as_of,
            duration_days=duration,
            updated_at=now,
            **decided,
        )
        stored[point] = row
    else:
        for name, value in decided.items():
            setattr(row, name, value)
        row.as_of = as_of
        row.duration_days = duration
        row.updated_at = now
    session.add(row)
    return before


def reassess(
    session: Session,
    *,
    protocol: Protocol,
    trial_id: str,
    subject_id: str,
    now: datetime,
    signals_topic: str,
    state: SubjectState | None = None,
) -> list[Outgoing]:
    """Recompute and store the subject's response (now and at passed timepoints); signal a loss once."""
    subject = state.subject if state is not None else session.get(Subject, (trial_id, subject_id))
    if subject is None or protocol.response is None:
        return []
    assessed = assess_subject(session, protocol=protocol, subject=subject, now=now, state=state)
    if assessed is None:
        return []
    rows = (
        state.response_rows if state is not None else stored_states(session, trial_id=trial_id, subject_id=subject_id)
    )
    stored = {row.point: row for row in rows}
    for name, (moment, result) in assessed.timepoints.items():
        _store_state(session, stored=stored, subject=subject, point=name, as_of=moment, result=result, now=now)
    before = _store_state(
        session, stored=stored, subject=subject, point=CURRENT, as_of=now, result=assessed.current, now=now
    )
    row = stored[CURRENT]
    loss = None
    if before is not None:
        previous: ResponseLevel = (
            "complete" if before.level == "complete" else "partial" if before.level == "partial" else "none"
        )
        loss = response_loss(
            previous_level=previous,
            previous_since=before.since,
            previous_confirmed_at=before.confirmed_at,
            current=assessed.current,
            now=now,
        )
    signalled = row.lost_signalled_since
    if loss is None:  # a response confirmed and lost between two assessments is lost all the same
        loss = unseen_loss(assessed.current, signalled_since=signalled)
    if loss is None or (signalled is not None and loss.previous_since is not None and loss.previous_since <= signalled):
        return []
    row.lost_signalled_since = loss.previous_since
    signal = ResponseLost(
        id=deterministic_id(
            "signal",
            "response.lost",
            trial_id,
            subject_id,
            loss.previous_level,
            str(loss.previous_since),
            str(loss.lost_at),
        ),
        source=protocol_engine.SIGNAL_SOURCE,
        subject=subject_id,
        time=loss.lost_at,
        trialid=trial_id,
        data=ResponseData(
            site_id=subject.site_id,
            subject_id=subject_id,
            level=loss.level,
            previous_level=loss.previous_level,
            previous_since=loss.previous_since,
            previous_confirmed_at=loss.previous_confirmed_at,
            lost_at=loss.lost_at,
            duration_days=loss.duration_days,
            reason=loss.reason,
        ),
    )
    return [Outgoing(topic=signals_topic, key=message_key(trial_id, subject_id), envelope=signal)]


def stored_states(session: Session, *, trial_id: str, subject_id: str) -> Sequence[ResponseStateRow]:
    return session.exec(
        select(ResponseStateRow).where(ResponseStateRow.trial_id == trial_id, ResponseStateRow.subject_id == subject_id)
    ).all()


def subjects_with_timepoint_due(session: Session, *, protocol: Protocol, now: datetime) -> list[str]:
    """Subjects with a response timepoint passed by `now` and not yet recorded (the sweep records it)."""
    rules = protocol.response
    if rules is None or not rules.timepoints:
        return []
    recorded = {
        (r.subject_id, r.point)
        for r in session.exec(select(ResponseStateRow).where(ResponseStateRow.trial_id == protocol.trial_id))
    }
    due = []
    for subject in store.subjects(session, trial_id=protocol.trial_id):
        window = protocol_engine.window_of(session, protocol=protocol, subject=subject)
        if window is None:
            continue
        for point in rules.timepoints:
            moment = window.calendar.day_ends(window.calendar.date_of(point.day))
            if moment <= now and (subject.subject_id, point.name) not in recorded:
                due.append(subject.subject_id)
                break
    return due


def sweep(session: Session, *, protocol: Protocol, now: datetime, signals_topic: str) -> list[Outgoing]:
    """The time-driven part: response timepoints passed with no record yet."""
    trial_id = protocol.trial_id
    signals: list[Outgoing] = []
    for subject_id in subjects_with_timepoint_due(session, protocol=protocol, now=now):
        signals += reassess(
            session, protocol=protocol, trial_id=trial_id, subject_id=subject_id, now=now, signals_topic=signals_topic
        )
    return signals
