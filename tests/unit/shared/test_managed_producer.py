"""A producer whose sender died of a fatal error (an out-of-order sequence after a broker restart) is
replaced: the service answers 503 for a moment, not until someone restarts it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber

from shared.kafka import BrokerUnavailable, ManagedProducer, sender_alive
from tests.polling import await_for


class FakeProducer:
    def __init__(self, *, dead: bool) -> None:
        self.dead = dead
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        self.stopped = False
        self._sender = SimpleNamespace(sender_task=None)

    async def start(self) -> None:
        task: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.dead:
            task.set_exception(OutOfOrderSequenceNumber())
            task.exception()  # retrieved: no "never retrieved" warning
        self._sender.sender_task = task

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, *, value: bytes, key: bytes, headers: list[Any]) -> None:
        if self.dead:
            raise OutOfOrderSequenceNumber()
        self.sent.append((topic, value, headers))


async def test_a_producer_with_a_dead_sender_is_replaced_by_a_new_one() -> None:
    made = [FakeProducer(dead=True), FakeProducer(dead=False)]
    factory = iter(made)
    managed = ManagedProducer(lambda: next(factory), publish_timeout=1)  # type: ignore[arg-type,return-value]
    stop = asyncio.Event()
    await managed.connect(stop)
    assert managed.connected.is_set()
    assert not sender_alive(made[0])  # type: ignore[arg-type]

    with pytest.raises(BrokerUnavailable):
        await managed.publish("t", key=b"k", value=b"{}")
    await await_for(lambda: _connected(managed), timeout=5, what="a new producer")

    await managed.publish("t", key=b"k", value=b'{"id": "e1"}')
    assert made[0].stopped
    [(topic, value, headers)] = made[1].sent
    assert (topic, value) == ("t", b'{"id": "e1"}')
    assert ("content-type", b"application/cloudevents+json") in headers
    await managed.close()


async def _connected(managed: ManagedProducer) -> bool:
    return managed.connected.is_set()


async def test_a_producer_that_lost_its_sequence_is_replaced_though_its_sender_lives() -> None:
    made = [FakeProducer(dead=False), FakeProducer(dead=False)]
    made[0].send_and_wait = _out_of_order  # type: ignore[method-assign]
    factory = iter(made)
    managed = ManagedProducer(lambda: next(factory), publish_timeout=1)  # type: ignore[arg-type,return-value]
    await managed.connect(asyncio.Event())
    with pytest.raises(BrokerUnavailable):
        await managed.publish("t", key=b"k", value=b"{}")
    await await_for(lambda: _connected(managed), timeout=5, what="a new producer")
    await managed.publish("t", key=b"k", value=b"{}")
    assert len(made[1].sent) == 1
    await managed.close()


async def _out_of_order(*_: Any, **__: Any) -> None:
    raise OutOfOrderSequenceNumber()
