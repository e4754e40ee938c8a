"""Without an exporter a consumer makes no spans, yet each record's trace goes on (log lines, outbox rows, the
relay's records) and one line per committed transaction says what was handled."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session, select

from shared.clock import FakeClock
from shared.db import create_tables
from shared.events import CLINICAL_ADAPTER, ClinicalEnvelope, message_key
from shared.inbox import ProcessedEvent
from shared.kafka import ConsumedMessage
from shared.metrics import ConsumerMetrics
from shared.outbox import OutboxMessage, Outgoing
from shared.processing import TransactionalHandler
from shared.tracing import consuming, current_traceparent
from tests.unit.shared.conftest import lines

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
SIGNALS = "sentinel.signals.v1"


def record(value: bytes, *, offset: int = 0, traceparent: str | None = PARENT) -> ConsumedMessage:
    headers = (("traceparent", traceparent.encode()),) if traceparent else ()
    return ConsumedMessage("sentinel.clinical.v1", 0, offset, b"k", value, headers)


def test_a_record_continues_its_senders_trace_with_a_span_id_of_its_own(output: io.StringIO, make_ae: Any) -> None:
    scope = consuming(None, consumer="safety")
    envelope = make_ae()
    with scope(record(envelope.model_dump_json().encode())):
        inside = current_traceparent()
        logging.getLogger("services.safety").warning("grading")
    assert inside is not None
    _version, trace_id, span_id, flags = inside.split("-")
    assert (trace_id, flags) == (TRACE, "01") and span_id != "00f067aa0ba902b7"
    [line] = lines(output)
    assert (line["trace_id"], line["span_id"]) == (TRACE, span_id)
    assert (line["event_id"], line["consumer"], line["subject"]) == (envelope.id, "safety", envelope.subject)
    assert current_traceparent() is None, "nothing stays current after the record"


def test_a_record_without_a_context_starts_a_sampled_trace(make_ae: Any) -> None:
    scope = consuming(None, consumer="notify")
    with scope(record(make_ae().model_dump_json().encode(), traceparent=None)):
        first = current_traceparent()
    with scope(record(make_ae().model_dump_json().encode(), traceparent=None)):
        second = current_traceparent()
    assert first is not None and second is not None
    assert first.endswith("-01") and first.split("-")[1] != second.split("-")[1]


def test_a_failing_record_is_logged_with_its_ids_and_the_error_goes_on(output: io.StringIO, make_ae: Any) -> None:
    envelope = make_ae()
    with pytest.raises(ValueError), consuming(None, consumer="safety")(record(envelope.model_dump_json().encode())):
        raise ValueError("rule bug")
    [line] = lines(output)
    assert (line["event"], line["error"], line["event_id"], line["trace_id"]) == (
        "event not handled",
        "ValueError",
        envelope.id,
        TRACE,
    )


class Rule:
    def __init__(self, make_sae: Any, *, fail_on: str | None = None) -> None:
        self._make_sae = make_sae
        self._fail_on = fail_on

    def __call__(self, session: Session, envelope: ClinicalEnvelope, now: datetime) -> Sequence[Outgoing]:
        if envelope.id == self._fail_on:
            raise RuntimeError("rule bug")
        signal = self._make_sae(signal_id=f"signal-of-{envelope.id}")
        return [Outgoing(topic=SIGNALS, key=message_key(envelope.trialid, envelope.subject), envelope=signal)]


def handler(engine: Engine, clock: FakeClock, rule: Rule) -> TransactionalHandler[ClinicalEnvelope]:
    create_tables(engine, [ProcessedEvent, OutboxMessage])
    return TransactionalHandler(
        engine=engine,
        consumer="safety",
        parse=CLINICAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=rule,
        clock=clock,
        metrics=ConsumerMetrics.create(CollectorRegistry(), "safety"),
        record_scope=consuming(None, consumer="safety"),
    )


async def test_one_line_per_committed_transaction_and_the_outbox_row_keeps_the_trace(
    output: io.StringIO, engine: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    handle = handler(engine, clock, Rule(make_sae))
    one = make_ae(version=1)
    assert await handle([record(one.model_dump_json().encode())]) == []
    [single] = [line for line in lines(output) if line["logger"] == "sentinel.events"]
    assert single["event"] == "event handled"
    assert (single["event_id"], single["subject"], single["trace_id"], single["offset"]) == (
        one.id,
        one.subject,
        TRACE,
        0,
    )
    with Session(engine) as session:
        [row] = session.exec(select(OutboxMessage)).all()
    assert row.trace_context is not None and row.trace_context.split("-")[1] == TRACE

    several = [make_ae(version=n) for n in (2, 3, 4)]
    batch = [record(e.model_dump_json().encode(), offset=n) for n, e in enumerate([one, *several], start=1)]
    assert await handle(batch) == []
    [plural] = [line for line in lines(output) if line["event"] == "events handled"]
    assert (plural["count"], plural["duplicates"], plural["event_ids"]) == (3, 1, [e.id for e in several])


async def test_nothing_is_said_handled_of_a_transaction_that_did_not_commit(
    output: io.StringIO, engine: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    bad = make_ae(version=9)
    handle = handler(engine, clock, Rule(make_sae, fail_on=bad.id))
    [rejected] = await handle([record(bad.model_dump_json().encode())])
    assert isinstance(rejected.error, RuntimeError)
    events = [line["event"] for line in lines(output)]
    assert "event not handled" in events
    assert not [e for e in events if e in ("event handled", "events handled")]


async def test_a_large_transaction_is_said_handled_in_lines_of_at_most_a_hundred_ids(
    output: io.StringIO, engine: Engine, clock: FakeClock, make_ae: Any, make_sae: Any
) -> None:
    handle = handler(engine, clock, Rule(make_sae))
    events = [make_ae(version=n) for n in range(1, 251)]
    assert await handle([record(e.model_dump_json().encode(), offset=n) for n, e in enumerate(events)]) == []
    handled = [line for line in lines(output) if line["event"] == "events handled"]
    assert [line["count"] for line in handled] == [100, 100, 50]
    assert [i for line in handled for i in line["event_ids"]] == [e.id for e in events]
