"""Safety drain: `python -m bench.bench_safety`.

Times safety's consumer (real Kafka, the real database, the outbox relay running) draining a backlog: a trial's
clinical stream (SENTINEL_BENCH_SUBJECTS subjects, default 50; 10 and 200 events each by default:
SENTINEL_BENCH_PER_SUBJECT) waiting on the bulk lane of a fresh topic, on SQLite and PostgreSQL
(SENTINEL_BENCH_DATABASES). Ahead of it on the lane, one poll's worth of other subjects' events warms the
service up: the clock starts once they are handled (the group join, the first fetch and the first compilation
of each statement are not timed; what a batch straddling the two held is left out, its time with it). The bulk
lane is polled 500 records at a time here, as the urgent lane is (the service's default bulk poll is smaller:
an urgent event waits at most for one). A run stops after SENTINEL_BENCH_LIMIT_SECONDS (default 20) and reports
the rate over what it processed by then; each figure is the median of SENTINEL_BENCH_REPEAT runs (default 3),
each on a fresh database.

Baseline of the same run: the same consumer and database with a rule that does nothing (inbox row only):
what Kafka, the batch transaction and the offset commits cost. Beside the full service, "rules only" runs
each record's own rule (lab grading, SAE, dose checks, acute window, with the batch's rows loaded once) without
the per-subject settle at the end of a batch (DLT window, eligibility, response, cohorts): the difference is
what recomputing the batch's subjects from their stored data costs. With few subjects, a batch holds several
events of each and the settle is shared; with many (SENTINEL_BENCH_SUBJECTS=500) it is paid about once per
event.
Targets: >= 2,000 events/s on both databases, flat from 10 to 200 events per subject.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry
from sqlmodel import Session

from bench.clinical_load import Message, trial_events
from bench.harness import BOOTSTRAP, env_int, env_list, fresh_database, fresh_topic, produce, timed_drain
from services.safety import clinical_events
from services.safety.main import MIGRATIONS
from shared.clock import SystemClock
from shared.consumer_service import ConsumerService, ConsumerSpec
from shared.db import make_engine
from shared.events import CLINICAL_ADAPTER, ClinicalEnvelope
from shared.kafka import delete_topics
from shared.lanes import bulk_topic, routine_topic
from shared.memory import tune_allocator, tune_gc
from shared.outbox import Outgoing
from shared.protocol import Protocol, load_protocol
from shared.schema_version import SHARED, prepare_database
from shared.settings import ConsumerTuning


def nothing(session: Session, envelope: ClinicalEnvelope, now: datetime) -> Sequence[Outgoing]:
    return []


class RulesOnly:
    """The records' own rules (lab grading, SAE, the batch's loads) without the subjects' reassessment."""

    def __init__(self, session: Session, now: datetime, envelopes: Sequence[ClinicalEnvelope], protocol: Protocol):
        self._batch = clinical_events.ClinicalBatch(
            session, now, protocol=protocol, signals_topic="bench.signals", envelopes=envelopes
        )

    def apply(self, envelope: ClinicalEnvelope, *, live: bool = False) -> Sequence[Outgoing]:
        return self._batch.apply(envelope, live=live)

    def finish(self) -> Sequence[tuple[str, Outgoing]]:
        return ()


WARMUP = trial_events(50, 10, seed=3, first=9000)
"""Fifty other subjects of the trial, ten events each (one poll): what the service handles before the clock starts."""


async def drain(database_url: str, stream: Sequence[Message], rule: str, *, limit_s: float) -> tuple[float, int]:
    """Events per second for safety's consumer, warm, to take `stream` as it is sent, and how many it processed:
    all of them, or what it did in `limit_s` seconds (so a slow rule cannot make the run long)."""
    topic = fresh_topic("safety")
    await produce(bulk_topic(topic), [*WARMUP, *stream])
    engine = make_engine(database_url)
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=True)
    protocol = load_protocol(None)
    signals = topic + ".signals"
    rules: dict[str, Any] = {
        "nothing": nothing,
        "rules": lambda session, now, envelopes: RulesOnly(session, now, envelopes, protocol),
        "safety": clinical_events.open_batch(protocol, signals),
    }
    spec: ConsumerSpec[ClinicalEnvelope] = ConsumerSpec(
        service="safety",
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        bootstrap_servers=BOOTSTRAP,
        consume_topic=topic,
        produce_topics=[signals, routine_topic(signals)],  # as safety's own spec: both lanes exist before
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=rules[rule],
        batched=rule != "nothing",
        bulk_topic=bulk_topic(topic),
        tuning=ConsumerTuning(bulk_batch=ConsumerTuning().max_batch),
    )
    registry = CollectorRegistry()
    committed = asyncio.Event()
    service = ConsumerService(spec, engine=engine, clock=SystemClock(), registry=registry, on_committed=committed.set)

    try:
        rate, done = await timed_drain(
            service,
            registry,
            name="safety",
            total=len(WARMUP) + len(stream),
            limit_s=limit_s,
            warmup=len(WARMUP),
            committed=committed,
        )
        return rate, done - len(WARMUP)
    finally:
        engine.dispose()
        await delete_topics(BOOTSTRAP, [topic])


def report(label: str, total: int, done: int, rate: float, baseline: float | None = None) -> None:
    events = f"{total:>7} events" if done >= total else f"{done:>7} of {total} events (time limit)"
    ratio = f"   ratio to baseline {rate / baseline:5.2f}" if baseline else ""
    print(f"{label:<44} {events:<32} {rate:>9,.0f} events/s{ratio}")


async def median_drain(
    database: str, stream: Sequence[Message], rule: str, *, limit_s: float, repeat: int
) -> tuple[float, int]:
    """The median rate of `repeat` drains, each on a fresh database (with how many events that run processed)."""
    runs = []
    for _ in range(repeat):
        with fresh_database(database) as url:
            runs.append(await drain(url, stream, rule, limit_s=limit_s))
    return sorted(runs)[len(runs) // 2]


async def run() -> None:
    subjects = env_int("SUBJECTS", 50)
    limit_s = env_int("LIMIT_SECONDS", 20)
    repeat = env_int("REPEAT", 3)
    sizes = [int(n) for n in env_list("PER_SUBJECT", "10,200")]
    databases = env_list("DATABASES", "sqlite,postgresql")
    print(f"safety drain: {subjects} subjects; Kafka {BOOTSTRAP}; median of {repeat} runs each")
    streams = {per_subject: trial_events(subjects, per_subject) for per_subject in sizes}
    for database in databases:
        stream = streams[max(sizes)]
        baseline, done = await median_drain(database, stream, "nothing", limit_s=limit_s, repeat=repeat)
        report(f"baseline: inbox only, {database}", len(stream), done, baseline)
        for per_subject in sizes:
            stream = streams[per_subject]
            for rule, label in (("safety", "safety"), ("rules", "rules only")):
                rate, done = await median_drain(database, stream, rule, limit_s=limit_s, repeat=repeat)
                report(f"{label}, {database}, {subjects} x {per_subject}", len(stream), done, rate, baseline)
    print("targets: safety >= 2,000 events/s on SQLite and PostgreSQL, flat from 10 to 200 events per subject")


def main() -> None:
    tune_allocator()  # as `sentinel run safety` does at start
    tune_gc()
    asyncio.run(run())


if __name__ == "__main__":
    main()
