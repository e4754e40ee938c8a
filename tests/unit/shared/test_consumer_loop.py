"""The consumer loop on a scripted consumer: one handler call and one offset commit per polled batch, rejected
messages dead-lettered before the commit, and the priority topic drained before the bulk one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from shared.kafka import ConsumedMessage, ConsumerLoop, PoisonMessage, Rejected
from shared.metrics import ConsumerMetrics

URGENT = TopicPartition("clinical", 0)
BULK = TopicPartition("clinical.bulk", 0)


def record(tp: TopicPartition, offset: int, value: bytes = b"{}") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", value, None, len(value), 0, ())


class ScriptedConsumer:
    """Buffers records per partition like aiokafka's fetcher; getmany returns what the given partitions hold."""

    def __init__(self, buffered: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], stop: asyncio.Event) -> None:
        self.buffered = buffered
        self.done = stop
        self.commits: list[dict[TopicPartition, int]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assignment(self) -> set[TopicPartition]:
        return {URGENT, BULK}

    def highwater(self, tp: TopicPartition) -> int:
        return 0

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int = 0) -> Any:
        wanted = partitions or tuple(self.buffered)
        out = {}
        for tp in wanted:
            records = self.buffered.get(tp, [])
            if records:
                out[tp], self.buffered[tp] = records[:max_records], records[max_records:]
                break  # one partition per poll, as the fetcher often answers
        if not out and not any(self.buffered.values()):
            self.done.set()
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


class DeadLetters:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.log.append(f"dlq {topic} {dict(headers)['source_offset'].decode()}")


async def test_priority_partitions_first_one_commit_per_batch_and_poison_dead_lettered_first() -> None:
    stop = asyncio.Event()
    consumer = ScriptedConsumer(
        {BULK: [record(BULK, n) for n in range(5)], URGENT: [record(URGENT, n) for n in range(3)]}, stop
    )
    log: list[str] = []

    async def handler(messages: Sequence[ConsumedMessage]) -> list[Rejected]:
        log.append("handle " + " ".join(f"{m.topic}@{m.offset}" for m in messages))
        return [Rejected(m, PoisonMessage("bad")) for m in messages if (m.topic, m.offset) == (BULK.topic, 1)]

    def before_commit(messages: Sequence[ConsumedMessage]) -> None:
        log.append(f"commit {len(messages)}")

    loop = ConsumerLoop(
        name="safety",
        consumer_factory=lambda: consumer,  # type: ignore[arg-type,return-value]
        handler=handler,
        dead_letters=DeadLetters(log),
        metrics=ConsumerMetrics.create(CollectorRegistry(), "safety"),
        before_offset_commit=before_commit,
        priority_topics=[URGENT.topic],
        max_batch=3,
        bulk_batch=3,
    )
    await asyncio.wait_for(loop.run(stop), timeout=5)

    assert log == [
        "handle clinical@0 clinical@1 clinical@2",
        "commit 3",
        "handle clinical.bulk@0 clinical.bulk@1 clinical.bulk@2",
        "dlq clinical.bulk.dlq 1",
        "commit 3",
        "handle clinical.bulk@3 clinical.bulk@4",
        "commit 2",
    ]
    assert consumer.commits == [{URGENT: 3}, {BULK: 3}, {BULK: 5}]


async def test_urgent_record_arriving_mid_backfill_goes_next() -> None:
    stop = asyncio.Event()
    consumer = ScriptedConsumer({BULK: [record(BULK, n) for n in range(6)]}, stop)
    handled: list[str] = []

    async def handler(messages: Sequence[ConsumedMessage]) -> list[Rejected]:
        handled.extend(f"{m.topic}@{m.offset}" for m in messages)
        if len(handled) == 2:  # an SAE is posted while the first bulk batch is being processed
            consumer.buffered[URGENT] = [record(URGENT, 0)]
        return []

    loop = ConsumerLoop(
        name="safety",
        consumer_factory=lambda: consumer,  # type: ignore[arg-type,return-value]
        handler=handler,
        dead_letters=DeadLetters([]),
        metrics=ConsumerMetrics.create(CollectorRegistry(), "safety"),
        priority_topics=[URGENT.topic],
        max_batch=2,
        bulk_batch=2,
    )
    await asyncio.wait_for(loop.run(stop), timeout=5)
    assert handled[:3] == ["clinical.bulk@0", "clinical.bulk@1", "clinical@0"]
    assert len(handled) == 7
