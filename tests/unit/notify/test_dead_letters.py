"""Issue 15, defect 1 (notify's half): a dead-lettered event pages someone, since it may be a lost SAE.

The DLQ record as `shared.kafka.ConsumerLoop._dead_letter` writes it becomes one alert per dead letter,
sent to a data manager / operator (and the safety officer when it could be an AE), escalating until
acknowledged, and idempotent by the dead letter's identity.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session

from services.notify import urgency
from services.notify.dead_letter_consumer import apply_dead_letter
from services.notify.dead_letters import DeadLetter, owner_targets, read_dead_letter
from services.notify.models import Alert
from shared.protocol import Protocol
from tests.unit.conftest import START, TRIAL
from tests.unit.notify.conftest import Notifier, act

OFFICER = "safety.officer@sentinel.example"
MONITOR = "medical.monitor@sentinel.example"
DATA_MANAGER = "data.manager@sentinel.example"


def dlq_record(
    event: dict[str, Any] | bytes, *, offset: int = 41, dlq_offset: int = 3, error: str = "Overflow: [<class 'x'>]"
) -> DeadLetter:
    value = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = [
        ("error", f"Traceback (most recent call last):\n  File 'x'\ndecimal.{error}".encode()),
        ("error_type", b"Overflow"),
        ("source_topic", b"sentinel.clinical.v1"),
        ("source_partition", b"2"),
        ("source_offset", str(offset).encode()),
        ("consumer", b"safety"),
    ]
    return read_dead_letter(
        topic="sentinel.clinical.v1.dlq",
        partition=0,
        offset=dlq_offset,
        key=f"{TRIAL}:101-004".encode(),
        value=value,
        headers=headers,
    )


def lab(**data: Any) -> dict[str, Any]:
    return {
        "id": "evt-lab-9",
        "type": "lab.resulted",
        "trialid": TRIAL,
        "subject": "101-004",
        "data": {"site_id": "101", "subject_id": "101-004", "uln": "1e999999", **data},
    }


def apply(notifier: Notifier, letter: DeadLetter, protocol: Protocol) -> bool:
    with Session(notifier.engine) as session, session.begin():
        return apply_dead_letter(session, letter, notifier.clock.now(), protocol=protocol)


def test_a_dlq_record_is_read_with_its_identity_and_error() -> None:
    letter = dlq_record(lab())
    assert letter.identity == "sentinel.clinical.v1[2]@41"
    assert (letter.event_id, letter.event_type, letter.subject_id, letter.site_id) == (
        "evt-lab-9",
        "lab.resulted",
        "101-004",
        "101",
    )
    assert letter.consumer == "safety" and letter.error_type == "Overflow"
    assert letter.error_summary.startswith("decimal.Overflow")
    assert letter.could_be_ae, "a lab can be a DLT-grade toxicity"


def test_an_unreadable_record_without_headers_still_becomes_a_dead_letter() -> None:
    letter = read_dead_letter(
        topic="sentinel.signals.v1.dlq", partition=1, offset=7, key=None, value=b"\xff\x00 not json", headers=()
    )
    assert letter.identity == "sentinel.signals.v1.dlq[1]@7"
    assert letter.source_topic == "sentinel.signals.v1"
    assert letter.event_type is None and letter.could_be_ae, "unknown content could be an SAE"


def test_owner_is_the_data_manager_plus_the_safety_officer_when_it_could_be_an_ae(protocol: Protocol) -> None:
    with_manager = protocol  # the shipped protocol names a site data manager
    assert any(c.role == "data_manager" for c in with_manager.contacts)
    without = protocol.model_copy(update={"contacts": [c for c in protocol.contacts if c.role != "data_manager"]})
    enrolment = dlq_record({"type": "subject.enrolled", "id": "e1", "data": {}})
    assert owner_targets(with_manager, enrolment) == ["data_manager"]
    assert owner_targets(with_manager, dlq_record(lab())) == ["data_manager", "safety_officer"]
    assert owner_targets(without, enrolment) == ["safety_officer"], "no data manager: step 0, never nobody"


async def test_a_dead_letter_pages_at_once_and_escalates_until_acknowledged(
    notifier: Notifier, protocol: Protocol
) -> None:
    assert apply(notifier, dlq_record(lab()), protocol)
    [alert] = notifier.rows(Alert)
    assert alert.kind == "dead_letter" and alert.subject_id == "101-004" and alert.site_id == "101"
    assert alert.details["identity"] == "sentinel.clinical.v1[2]@41" and alert.details["could_be_ae"] is True
    assert {d.urgency for d in notifier.deliveries()} == {urgency.CRITICAL}
    sent = await notifier.at(START)
    assert sorted(to for to, _ in sent) == [DATA_MANAGER, OFFICER], "the owner, and the officer: it could be an AE"
    assert "Event not processed: lab.resulted" in sent[0][1]
    body = notifier.channel.sent[0].get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    for expected in ("could be an adverse event", "evt-lab-9", "decimal.Overflow", "sentinel.clinical.v1.dlq[0]@3"):
        assert expected in text
    escalated = await notifier.at(START + timedelta(minutes=30))
    assert [to for to, _ in escalated] == [MONITOR], "unacknowledged: escalation step 2"
    notifier.clock.set(START + timedelta(minutes=40))
    act(notifier, "acknowledge", actor="dr.officer")
    assert await notifier.at(START + timedelta(hours=6)) == [], "acknowledged: paging stops"
    assert [h.action for h in notifier.history()][:1] == ["opened"]


async def test_the_same_dead_letter_twice_is_one_alert_and_one_page(notifier: Notifier, protocol: Protocol) -> None:
    assert apply(notifier, dlq_record(lab()), protocol)
    assert not apply(notifier, dlq_record(lab()), protocol), "re-delivered DLQ record"
    assert not apply(notifier, dlq_record(lab(), dlq_offset=9), protocol), "the same record dead-lettered again"
    assert apply(notifier, dlq_record(lab(), offset=42), protocol), "another record is another alert"
    assert len(notifier.rows(Alert)) == 2
    assert len(await notifier.at(START)) == 4  # each to the data manager and the safety officer


class FakeRecord:
    def __init__(self, letter_value: bytes, offset: int) -> None:
        self.topic, self.partition, self.offset = "sentinel.clinical.v1.dlq", 0, offset
        self.key, self.value = f"{TRIAL}:101-004".encode(), letter_value
        self.headers = [("source_topic", b"sentinel.clinical.v1"), ("source_partition", b"0")]
        self.headers.append(("source_offset", str(offset).encode()))


class FakeConsumer:
    """Hands out the records after the committed offset, like a consumer group resuming."""

    def __init__(self, records: list[FakeRecord]) -> None:
        self.records = records
        self.committed = 0
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, list[FakeRecord]]:
        await asyncio.sleep(0)
        waiting = [r for r in self.records if r.offset >= self.committed]
        return {"tp": waiting} if waiting else {}

    async def commit(self, offsets: dict[str, int]) -> None:
        self.committed = offsets["tp"]
        if self.committed > self.records[-1].offset:
            self.caught_up.set()


async def test_a_dead_letter_that_cannot_be_alerted_is_retried_not_skipped(
    notifier: Notifier, protocol: Protocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.notify import dead_letter_consumer
    from services.notify.metrics import DeadLetterMetrics

    real = dead_letter_consumer.apply_dead_letter
    calls: list[str] = []

    def flaky(session: Session, letter: DeadLetter, now: Any, *, protocol: Protocol) -> bool:
        calls.append(letter.identity)
        if len(calls) == 1:
            raise RuntimeError("a bug in the alert plan")
        return real(session, letter, now, protocol=protocol)

    monkeypatch.setattr(dead_letter_consumer, "apply_dead_letter", flaky)
    consumer = FakeConsumer([FakeRecord(json.dumps(lab()).encode(), 5)])
    registry = CollectorRegistry()
    watch = dead_letter_consumer.DeadLetterWatch(
        engine=notifier.engine,
        protocol=protocol,
        clock=notifier.clock,
        metrics=DeadLetterMetrics.create(registry),
        bootstrap_servers="unused",
        group_id="unused",
        topics=["sentinel.clinical.v1.dlq"],
        consumer_factory=lambda: consumer,  # type: ignore[arg-type,return-value]
        prepare=lambda: asyncio.sleep(0),
        max_backoff=0.01,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(watch.run(stop))
    await asyncio.wait_for(consumer.caught_up.wait(), timeout=5)
    stop.set()
    await running
    assert calls == ["sentinel.clinical.v1[0]@5"] * 2, "the same record again after the error"
    assert registry.get_sample_value("sentinel_notify_dead_letter_watch_errors_total") == 1
    assert registry.get_sample_value("sentinel_notify_dead_letter_alerts_total", {"outcome": "opened"}) == 1
    assert [a.kind for a in notifier.rows(Alert)] == ["dead_letter"]
