"""Kafka topic names: one constant each, so producers and consumers cannot drift apart."""

CLINICAL = "sentinel.clinical.v1"
SIGNALS = "sentinel.signals.v1"
DLQ_SUFFIX = ".dlq"


def dead_letter_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX
