"""Against the broker CI started with `sentinel kafka up`: it answers, and auto-creates topics."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from pathlib import Path

import pytest

from services.devstack import kafka_broker as kb

pytestmark = pytest.mark.integration


def _cfg() -> kb.BrokerConfig:
    bootstrap = os.environ.get("SENTINEL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092").split(",")[0]
    host, _, port = bootstrap.rpartition(":")
    cfg = dataclasses.replace(kb.BrokerConfig(), host=host, port=int(port))
    if state_dir := os.environ.get("SENTINEL_KAFKA_STATE_DIR"):
        cfg = dataclasses.replace(cfg, state_dir=Path(state_dir))
    return cfg


def test_status_reports_an_answering_broker() -> None:
    cfg = _cfg()
    st = kb.status(cfg)
    assert st.answering, st.message
    assert st.bootstrap == cfg.bootstrap
    if kb.absolute(cfg).pid_file.exists():  # started from this checkout: we own the process too
        assert st.running and st.pid is not None, st.message
        assert "running" in st.message


async def test_produce_and_consume_on_an_auto_created_topic() -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    cfg = _cfg()
    topic = f"devstack-smoke-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=cfg.bootstrap, group_id=topic, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"hello")
