"""Ingest's batch publish: every record queued before any ack is awaited, and what it reports as published is,
for each key, the records before the first failure, so a resend republishes the rest in order."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber

from shared.kafka import EventRecord, ManagedProducer
from tests.polling import await_for


class QueueingProducer:
    """Hands out one future per send and settles them later, as aiokafka's accumulator does."""

    def __init__(self, fail: set[bytes] = frozenset(), error: type[Exception] = KafkaTimeoutError) -> None:
        self.fail = fail  # values whose acknowledgement fails
        self.error = error
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.acks: list[tuple[bytes, asyncio.Future[object]]] = []
        self.stopped = False
        self._sender = SimpleNamespace(sender_task=None)

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: list[Any]) -> asyncio.Future[object]:
        ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value, headers))
        self.acks.append((value, ack))
        asyncio.get_running_loop().call_soon(self._settle)
        return ack

    def _settle(self) -> None:
        for value, ack in self.acks:
            if not ack.done():
                ack.set_exception(self.error()) if value in self.fail else ack.set_result(None)


def record(topic: str, key: bytes, value: bytes) -> EventRecord:
    return EventRecord(topic, key, value, {"event_id": value.decode()})


async def test_a_batch_is_sent_at_once_with_one_trace_header_set_and_every_record_reported() -> None:
    producer = QueueingProducer()
    managed = ManagedProducer(lambda: producer, publish_timeout=5)  # type: ignore[arg-type,return-value]
    await managed.connect(asyncio.Event())
    records = [record("urgent", b"s1", b"e1"), record("bulk", b"s2", b"e2"), record("urgent", b"s1", b"e3")]
    assert await managed.publish_each(records) == [None, None, None]
    assert [(topic, value) for topic, _, value, _ in producer.sent] == [
        ("urgent", b"e1"),
        ("urgent", b"e3"),
        ("bulk", b"e2"),
    ]
    assert all(("content-type", b"application/cloudevents+json") in h for *_, h in producer.sent)
    await managed.close()


async def test_after_a_failed_record_the_rest_of_its_key_is_reported_failed_but_other_keys_are_not() -> None:
    producer = QueueingProducer(fail={b"s1-2"})
    managed = ManagedProducer(lambda: producer, publish_timeout=5)  # type: ignore[arg-type,return-value]
    await managed.connect(asyncio.Event())
    records = [
        record("t", b"s1", b"s1-1"),
        record("t", b"s2", b"s2-1"),
        record("t", b"s1", b"s1-2"),
        record("t", b"s1", b"s1-3"),  # the broker has it, but after a gap: not reported as published
        record("t", b"s2", b"s2-2"),
    ]
    outcomes = await managed.publish_each(records)
    assert [outcome is None for outcome in outcomes] == [True, True, False, False, True]
    assert "KafkaTimeoutError" in str(outcomes[2])
    assert managed.connected.is_set()  # a timeout is not a lost producer
    await managed.close()


async def test_a_producer_that_lost_its_sequence_is_replaced_after_a_batch() -> None:
    made = [QueueingProducer(fail={b"e1"}, error=OutOfOrderSequenceNumber), QueueingProducer()]
    factory = iter(made)
    managed = ManagedProducer(lambda: next(factory), publish_timeout=5)  # type: ignore[arg-type,return-value]
    await managed.connect(asyncio.Event())
    [outcome] = await managed.publish_each([record("t", b"s1", b"e1")])
    assert outcome is not None
    await await_for(lambda: _replaced(managed, made[1]), timeout=5, what="a new producer")
    assert await managed.publish_each([record("t", b"s1", b"e1")]) == [None]
    await managed.close()


async def _replaced(managed: ManagedProducer, new: QueueingProducer) -> bool:
    return managed.connected.is_set() and managed._producer is new  # type: ignore[comparison-overlap]


async def test_acks_that_never_come_within_the_timeout_are_failures_not_a_hang() -> None:
    producer = QueueingProducer()
    producer._settle = lambda: None  # type: ignore[method-assign]  # the broker never answers
    managed = ManagedProducer(lambda: producer, publish_timeout=0.05)  # type: ignore[arg-type,return-value]
    await managed.connect(asyncio.Event())
    outcomes = await managed.publish_each([record("t", b"s1", b"e1"), record("t", b"s2", b"e2")])
    assert all(outcome is not None and "TimeoutError" in str(outcome) for outcome in outcomes)
    for _, ack in producer.acks:  # acknowledged late: seen by nobody, and no "never retrieved" complaint
        ack.set_exception(KafkaTimeoutError())
    await managed.close()
