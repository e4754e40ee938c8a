"""The time-driven part of safety: missed assessments, and cohorts whose windows closed with time alone.

No clinical event arrives when a visit is skipped or a DLT window ends quietly, so a background job
sweeps every `SENTINEL_SAFETY_SWEEP_SECONDS` with the injected clock. `run_sweep` is the whole job for
one `now`, in its own transaction, callable directly from tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine
from sqlmodel import Session

from services.safety import infusion_day, protocol_engine, response_tracking, sample_tracking, store, subject_store
from services.safety.assessments import missed_visits, schedule
from services.safety.models import MissedAssessment
from shared.audit import lock_audit_chain
from shared.clock import Clock
from shared.events import AssessmentMissed, AssessmentMissedData, deterministic_id, message_key
from shared.outbox import Outgoing, add_to_outbox
from shared.protocol import Protocol

log = logging.getLogger(__name__)


def sweep(session: Session, *, protocol: Protocol, now: datetime, signals_topic: str) -> list[Outgoing]:
    """Reassess the subjects whose outcome changes with time by `now` (a DLT window or a required visit ended)
    and any subject without an outcome row yet (a database upgraded from before they existed), re-decide their
    arms, then flag each visit missed by `now` (once); the caller owns the transaction."""
    trial_id = protocol.trial_id
    signals: list[Outgoing] = []
    arms: set[str] = set()
    due = subject_store.subjects_due(session, trial_id=trial_id, now=now)
    due += subject_store.subjects_without_outcome(session, trial_id=trial_id)
    for subject_id in sorted(set(due)):
        reassessed = protocol_engine.reassess_subject(
            session,
            protocol=protocol,
            trial_id=trial_id,
            subject_id=subject_id,
            source_event_id=f"sweep/{subject_id}/{now.isoformat()}",
            now=now,
            signals_topic=signals_topic,
        )
        signals += reassessed.signals
        arms |= reassessed.arms
    if arms:
        session.flush()
        signals += protocol_engine.reassess_cohorts(
            session, protocol=protocol, now=now, source_id="sweep", signals_topic=signals_topic, arms=arms
        )
    signals += infusion_day.flag_vitals_gaps(session, protocol=protocol, now=now, signals_topic=signals_topic)
    signals += response_tracking.sweep(session, protocol=protocol, now=now, signals_topic=signals_topic)
    signals += sample_tracking.sweep(session, protocol=protocol, now=now, signals_topic=signals_topic)
    if not protocol.assessments:
        return signals
    flagged = store.flagged_assessments(session, trial_id=trial_id)
    withdrawn = store.inactive_in_trial(session, trial_id=trial_id, record_type="enrollment")
    inactive_labs = store.inactive_in_trial(session, trial_id=trial_id, record_type="lab")
    inactive_aes = store.inactive_in_trial(session, trial_id=trial_id, record_type="ae")
    lab_times: dict[str, list[datetime]] = defaultdict(list)
    for lab in store.labs(session, trial_id=trial_id):
        if (lab.subject_id, lab.result_id) not in inactive_labs:
            lab_times[lab.subject_id].append(lab.collected_at)
    ae_times: dict[str, list[datetime]] = defaultdict(list)
    for version in store.ae_versions(session, trial_id=trial_id):
        if (version.subject_id, version.ae_id) not in inactive_aes:
            ae_times[version.subject_id].append(version.received_at)
    reviews = infusion_day.review_marks(session, trial_id=trial_id)
    for subject in store.subjects(session, trial_id=trial_id):
        sid = subject.subject_id
        if subject.arm is None or (sid, sid) in withdrawn:
            continue
        window = protocol_engine.window_of(session, protocol=protocol, subject=subject)
        if window is None:
            continue
        missed = missed_visits(
            schedule(protocol.assessments, calendar=window.calendar),
            now=now,
            lab_times=lab_times[sid],
            ae_times=ae_times[sid],
            flagged={name for (owner, name) in flagged if owner == sid},
            reviews=reviews.get(sid, []),
            evidence=protocol.ae_assessment.evidence,
        )
        for miss in missed:
            visit = miss.visit
            session.add(
                MissedAssessment(
                    trial_id=trial_id,
                    subject_id=sid,
                    assessment=visit.name,
                    due_from=visit.due_from,
                    due_until=visit.due_until,
                    missing=miss.missing,
                    flagged_at=now,
                )
            )
            signal = AssessmentMissed(
                id=deterministic_id("signal", "assessment.missed", trial_id, sid, visit.name),
                source=protocol_engine.SIGNAL_SOURCE,
                subject=sid,
                time=now,
                trialid=trial_id,
                data=AssessmentMissedData(
                    site_id=subject.site_id,
                    subject_id=sid,
                    assessment=visit.name,
                    due_from=visit.due_from,
                    due_until=visit.due_until,
                    missing=miss.missing,
                ),
            )
            signals.append(Outgoing(topic=signals_topic, key=message_key(trial_id, sid), envelope=signal))
    return signals


def run_sweep(
    engine: Engine, *, protocol: Protocol, now: datetime, signals_topic: str, producer: str = "safety"
) -> list[Outgoing]:
    """One sweep in its own transaction; its signals go to the outbox with the state that caused them."""
    with Session(engine) as session, session.begin():
        lock_audit_chain(session, service=producer)  # before any row lock, as in the consumer's transaction
        signals = sweep(session, protocol=protocol, now=now, signals_topic=signals_topic)
        for outgoing in signals:
            add_to_outbox(session, producer=producer, message=outgoing, now=now)
    return signals


@dataclass(frozen=True)
class SweepMetrics:
    runs: Counter
    failures: Counter
    signals: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SweepMetrics:
        return cls(
            runs=Counter("sentinel_safety_sweeps", "Completed safety sweeps", registry=registry),
            failures=Counter("sentinel_safety_sweep_failures", "Safety sweeps that failed", registry=registry),
            signals=Counter("sentinel_safety_sweep_signals", "Signals written by safety sweeps", registry=registry),
        )


class SweepJob:
    """`async def job(stop)` for ConsumerService.running: sweep now, then every `interval` seconds."""

    def __init__(
        self,
        *,
        engine: Engine,
        protocol: Protocol,
        clock: Clock,
        interval_seconds: float,
        signals_topic: str,
        wake_relay: Callable[[], None],
        metrics: SweepMetrics,
    ) -> None:
        self._engine = engine
        self._protocol = protocol
        self._clock = clock
        self._interval = interval_seconds
        self._signals_topic = signals_topic
        self._wake_relay = wake_relay
        self._metrics = metrics

    async def __call__(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                written = await asyncio.to_thread(
                    run_sweep,
                    self._engine,
                    protocol=self._protocol,
                    now=self._clock.now(),
                    signals_topic=self._signals_topic,
                )
            except Exception:
                # Not swallowed: counted, logged with the traceback, and the next interval retries it.
                self._metrics.failures.inc()
                log.exception("safety sweep failed; retrying in %.0fs", self._interval)
            else:
                self._metrics.runs.inc()
                if written:
                    self._metrics.signals.inc(len(written))
                    self._wake_relay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
