"""Test-side Kafka helpers: publish raw bytes, read a whole topic."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


async def publish(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0, settle: float = 1.0
) -> list[Record]:
    """Read from the beginning until `expect` records arrived, then `settle` seconds more to catch extras."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if len(records) >= expect and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() > settle_until:
                break
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(Record(m.key, m.value, dict(m.headers or ())) for m in messages)
        return records
    finally:
        await consumer.stop()


def read_topic_sync(bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0) -> list[Record]:
    return asyncio.run(read_topic(bootstrap, topic, expect=expect, timeout=timeout))


def publish_sync(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    asyncio.run(publish(bootstrap, topic, messages))
