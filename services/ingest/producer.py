"""Ingest's Kafka producer: the guarantees of `shared.kafka.make_producer` (acks=all, idempotent), with batches
sized for 100-event posts and backfills.

aiokafka keeps one batch per partition and its default holds 16 KiB (about 30 envelopes); once it is full every
further send waits for a whole broker round trip. That capped ingest near 2,000 events/s whatever the request
size. A batch must stay under the broker's `message.max.bytes` (1 MiB by default).
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from services.ingest.settings import IngestSettings


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
    )
