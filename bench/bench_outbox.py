"""Inbox claims, outbox rows and the relay: `python -m bench.bench_outbox`.

Per record: a consumer's batch transaction claims each event (inbox) and queues one outgoing message
(outbox) for it, then flushes, as the transactional handler does; SENTINEL_BENCH_RECORDS records (default
5,000) in transactions of 500, on SQLite and PostgreSQL (SENTINEL_BENCH_DATABASES). Baseline of the same run:
the same rows written by one multi-row INSERT per table per transaction (the floor for these rows).

Relay: a committed outbox row to its broker acknowledgement (the relay woken after the commit, as the
consumer's commit hook does), SENTINEL_BENCH_RELAY_ROWS times (default 50), one row at a time; idle, and
while another writer holds write transactions of 150 ms one after the other (a consumer's batches). Baseline:
the same record published straight through the same producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, insert
from sqlmodel import Session

from bench.harness import BOOTSTRAP, env_int, env_list, fresh_database, fresh_topic
from shared.clock import SystemClock
from shared.db import create_tables, make_engine
from shared.events import AssessmentMissed, AssessmentMissedData
from shared.inbox import Claim, ProcessedEvent, add_claim
from shared.kafka import ManagedProducer, OutgoingRecord, delete_topics, ensure_topics, make_producer
from shared.metrics import OutboxMetrics
from shared.outbox import OutboxMessage, OutboxRelay, Outgoing, add_to_outbox

BATCH = 500
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def _outgoing(topic: str, n: int, run: str) -> Outgoing:
    data = AssessmentMissedData(
        site_id="101", subject_id=f"101-{n:04d}", assessment="day 14", due_from=NOW, due_until=NOW, missing=["lab"]
    )
    envelope = AssessmentMissed(
        id=f"{run}-sig-{n}", source="/services/safety", subject=data.subject_id, time=NOW, trialid="T", data=data
    )
    return Outgoing(topic=topic, key=data.subject_id.encode(), envelope=envelope)


def per_record(engine: Engine, records: int, run: str) -> float:
    """Seconds per record: add_claim + add_to_outbox + flush, in batch transactions."""
    messages = [_outgoing("bench.signals", n, run) for n in range(records)]
    started = time.perf_counter()
    for first in range(0, records, BATCH):
        with Session(engine) as session, session.begin():
            for n in range(first, min(first + BATCH, records)):
                claim = Claim(f"{run}-evt-{n}", "bench.clinical", 0, n)
                add_claim(session, consumer="bench", claim=claim, now=NOW)
                add_to_outbox(session, producer="bench", message=messages[n], now=NOW)
                session.flush()
    return (time.perf_counter() - started) / records


def floor(engine: Engine, records: int, run: str) -> float:
    """Seconds per record: the same rows, one multi-row INSERT per table per transaction."""
    messages = [_outgoing("bench.signals", n, run) for n in range(records)]
    started = time.perf_counter()
    for first in range(0, records, BATCH):
        span = range(first, min(first + BATCH, records))
        claims: list[dict[str, Any]] = [
            {
                "consumer": "bench",
                "event_id": f"{run}-evt-{n}",
                "topic": "t",
                "partition": 0,
                "offset": n,
                "processed_at": NOW,
            }
            for n in span
        ]
        rows: list[dict[str, Any]] = [
            {
                "message_id": messages[n].message_id,
                "producer": "bench",
                "topic": messages[n].topic,
                "key": messages[n].key,
                "value": messages[n].envelope.model_dump_json().encode(),
                "created_at": NOW,
            }
            for n in span
        ]
        with engine.begin() as connection:
            connection.execute(insert(ProcessedEvent.__table__), claims)  # type: ignore[arg-type]
            connection.execute(insert(OutboxMessage.__table__), rows)  # type: ignore[arg-type]
    return (time.perf_counter() - started) / records


class TimedPublisher:
    """The producer, noting when each batch it published was acknowledged."""

    def __init__(self, producer: ManagedProducer) -> None:
        self.producer = producer
        self.acked: list[float] = []
        self.published = asyncio.Event()

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        await self.producer.publish_many(records)
        self.acked += [time.perf_counter()] * len(records)
        self.published.set()

    async def wait_for(self, count: int) -> None:
        while len(self.acked) < count:
            self.published.clear()
            await asyncio.wait_for(self.published.wait(), timeout=30)


class BusyWriter:
    """A consumer's batch transactions: write transactions of `hold` seconds, one after the other."""

    def __init__(self, engine: Engine, hold: float) -> None:
        self._engine = engine
        self._hold = hold
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            with Session(self._engine) as session, session.begin():
                add_claim(session, consumer="busy", claim=Claim(uuid.uuid4().hex, "t", 0, n), now=NOW)
                session.flush()
                time.sleep(self._hold)  # the batch's work, holding the write lock as a consumer does
            n += 1
            time.sleep(0.02)  # polling the next batch: other writers get their turn

    def __enter__(self) -> BusyWriter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def relay_latency(url: str, rows: int, *, busy: float = 0.0) -> tuple[list[float], list[float]]:
    """(commit -> broker ack through the relay, the same record published directly), seconds each; `busy`:
    while another writer holds write transactions of that many seconds, one after the other."""
    engine = make_engine(url)
    create_tables(engine, [ProcessedEvent, OutboxMessage])
    try:
        with BusyWriter(engine, busy) if busy else contextlib.nullcontext():
            return await _relay_latency(engine, rows)
    finally:
        engine.dispose()


async def _relay_latency(engine: Engine, rows: int) -> tuple[list[float], list[float]]:
    topic = fresh_topic("outbox")
    await ensure_topics(BOOTSTRAP, [topic])
    producer = ManagedProducer(lambda: make_producer(BOOTSTRAP, client_id="bench-outbox"))
    stop = asyncio.Event()
    await producer.connect(stop)
    publisher = TimedPublisher(producer)
    relay = OutboxRelay(
        engine=engine,
        publisher=publisher,
        producer="bench",
        clock=SystemClock(),
        metrics=OutboxMetrics.create(CollectorRegistry(), "bench"),
    )
    running = asyncio.create_task(relay.run(stop))
    through_relay: list[float] = []
    direct: list[float] = []
    run = uuid.uuid4().hex[:8]
    try:
        for n in range(rows):
            message = _outgoing(topic, n, run)

            def commit(message: Outgoing = message) -> None:
                with Session(engine) as session, session.begin():
                    add_to_outbox(session, producer="bench", message=message, now=NOW)

            await asyncio.to_thread(commit)
            committed = time.perf_counter()
            relay.wake()
            await publisher.wait_for(n + 1)
            through_relay.append(publisher.acked[n] - committed)
            record = OutgoingRecord(topic=topic, key=message.key, value=message.envelope.model_dump_json().encode())
            started = time.perf_counter()
            await producer.publish_many([record])
            direct.append(time.perf_counter() - started)
    finally:
        stop.set()
        relay.wake()
        await running
        await producer.close()
        await delete_topics(BOOTSTRAP, [topic])
    return through_relay, direct


async def run() -> None:
    records = env_int("RECORDS", 5000)
    relay_rows = env_int("RELAY_ROWS", 50)
    databases = env_list("DATABASES", "sqlite,postgresql")
    print(f"inbox claim + outbox row per record: {records} records in transactions of {BATCH}")
    for database in databases:
        with fresh_database(database) as url:
            engine = make_engine(url)
            create_tables(engine, [ProcessedEvent, OutboxMessage])
            base = floor(engine, records, "floor")
            cost = per_record(engine, records, "claims")
            engine.dispose()
        print(
            f"  {database:<11} {cost * 1e6:7.0f} us/record  "
            f"(one multi-row INSERT per table: {base * 1e6:5.0f} us/record; ratio {cost / base:5.1f})"
        )
    print(f"outbox relay: a committed row to its broker ack, {relay_rows} rows one at a time")
    for database in databases:
        for busy in (0.0, 0.15):
            with fresh_database(database) as url:
                through, direct = await relay_latency(url, relay_rows, busy=busy)
            p50, p50_direct = statistics.median(through), statistics.median(direct)
            label = f"{database}, {'idle' if not busy else f'writer busy {busy * 1000:.0f} ms at a time'}"
            print(
                f"  {label:<36} p50 {p50 * 1000:6.1f} ms  max {max(through) * 1000:6.1f} ms  "
                f"(published directly: p50 {p50_direct * 1000:5.1f} ms; ratio {p50 / p50_direct:4.1f})"
            )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
