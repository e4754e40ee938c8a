"""Ingest's Kafka producer: the guarantees of `shared.kafka.make_producer` (acks=all, idempotent), with batches
sized for 100-event posts and backfills.

aiokafka keeps one batch per partition and its default holds 16 KiB (about 30 envelopes); once it is full every
further send waits for a whole broker round trip. That capped ingest near 2,000 events/s whatever the request
size. A batch must stay under the broker's `message.max.bytes` (1 MiB by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2

from services.ingest.settings import IngestSettings

KEY_HASHES = 4096
"""Subjects whose partition hash is remembered (a trial's active subjects; about 150 bytes each)."""


class SubjectPartitioner:
    """Kafka's default partitioning of keyed records (murmur2, as the Java client: a key always lands on the
    partition every other client would choose), with each key's hash remembered: aiokafka computes murmur2 in pure
    Python on every send, and one subject's key recurs on every event of that subject."""

    def __init__(self, remembered: int = KEY_HASHES) -> None:
        self._hash = lru_cache(maxsize=remembered)(_positive_murmur2)
        self._unkeyed = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return int(self._unkeyed(key, list(all_partitions), list(available)))
        return all_partitions[self._hash(key) % len(all_partitions)]


def _positive_murmur2(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def make_ingest_producer(settings: IngestSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="sentinel-ingest",
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=10_000,
        max_batch_size=settings.producer_batch_bytes,
        max_request_size=2 * 1024 * 1024,
        partitioner=SubjectPartitioner(),
    )
