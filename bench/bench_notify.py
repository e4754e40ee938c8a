"""Notify: signals applied per second, and a committed page to its SMTP hand-off: `python -m bench.bench_notify`.

Drain: fills a fresh signals topic with what safety sends for SENTINEL_BENCH_SUBJECTS subjects (default 200):
per subject an SAE and its follow-up, lab toxicities (two terms, one worsening twice) and a missed visit,
then times notify's consumer (real Kafka, the real database, the relay running, its rule as the service builds it,
with a console URL as deployments set one) working through them, on
SQLite and PostgreSQL (SENTINEL_BENCH_DATABASES). The clock starts at the first processed signal; a run stops
after SENTINEL_BENCH_LIMIT_SECONDS (default 20). Baseline of the same run: the same consumer and database with
a rule that does nothing (inbox row only): what Kafka, the batch transaction and the offset commits cost.

Page: an SAE signal applied and committed the way the consumer does it (then the dispatcher woken, as the
consumer's commit hook does), SENTINEL_BENCH_PAGES times (default 20), with a backlog of digest notices and
retries queued; the time from the commit to the mail server's receipt of the page. Baseline: the same mail
handed straight to the SMTP channel.
"""

from __future__ import annotations

import asyncio
import email.policy
import re
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlmodel import Session

from bench.clinical_load import Message
from bench.harness import BOOTSTRAP, env_int, env_list, fresh_database, fresh_topic, produce, timed_drain
from services.devstack.mail_catcher import MailCatcher
from services.notify.channels import OutgoingMessage
from services.notify.channels.email import EmailDelivery, SmtpChannel, SmtpConfig
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.main import MIGRATIONS
from services.notify.signal_batch import open_batch
from services.notify.signals import apply_signal
from shared.clock import SystemClock
from shared.consumer_service import ConsumerService, ConsumerSpec
from shared.db import make_engine
from shared.events import (
    SIGNAL_ADAPTER,
    AssessmentMissed,
    AssessmentMissedData,
    AwarenessBasis,
    EnvelopeBase,
    LabToxicity,
    LabToxicityData,
    SaeData,
    SaeDetected,
    SaeUpdated,
    SignalEnvelope,
    message_key,
)
from shared.kafka import delete_topics
from shared.memory import tune_allocator, tune_gc
from shared.outbox import Outgoing
from shared.processing import per_record
from shared.protocol import load_protocol
from shared.schema_version import SHARED, prepare_database

TRIAL = "NCT07212335"
CONSOLE_URL = "https://sentinel-console.example"
"""Set as every deployment sets SENTINEL_CONSOLE_URL: each mail links to its alert's page."""
START = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
PAGE_SUBJECT = re.compile(r"SAE report due.*subject ((?:PG|DI)-[0-9a-f-]+)")


def _sae(signal_id: str, subject: str, version: int, grade: int, at: datetime) -> SaeData:
    return SaeData(
        site_id="101",
        subject_id=subject,
        ae_id=f"{subject}-AE1",
        ae_version=version,
        term="Cytokine release syndrome",
        grade=grade,
        criteria=["hospitalization"],
        relatedness=None,
        outcome=None,
        onset=None,
        awareness_at=at,
        awareness_basis=AwarenessBasis.SITE,
        received_at=at,
        source_event_id=signal_id,
    )


def _lab(signal_id: str, subject: str, term: str, grade: int, at: datetime) -> LabToxicityData:
    return LabToxicityData(
        site_id="101",
        subject_id=subject,
        result_id=signal_id,
        test="NEUT" if term.startswith("Neutrophil") else "ALT",
        term=term,
        grade=grade,
        baseline_grade=0,
        previous_grade=grade - 1 if grade > 1 else None,
        value="0.4",
        unit="10^9/L",
        reason="worse than baseline",
        collected_at=at,
        source_event_id=signal_id,
        received_at=at,
    )


def subject_signals(subject: str) -> list[EnvelopeBase]:
    """What safety sends about one eventful subject, in its order: 6 signals, 5 of them notifying someone."""
    at = START
    common = {"source": "/services/safety", "subject": subject, "trialid": TRIAL}
    missed = AssessmentMissedData(
        site_id="101",
        subject_id=subject,
        assessment="day 14",
        due_from=at - timedelta(days=3),
        due_until=at - timedelta(days=1),
        missing=["lab"],
    )
    return [
        LabToxicity(
            id=f"{subject}-lab1",
            time=at,
            data=_lab(f"{subject}-lab1", subject, "Neutrophil count decreased", 2, at),
            **common,
        ),
        SaeDetected(id=f"{subject}-sae1", time=at, data=_sae(f"{subject}-sae1", subject, 1, 3, at), **common),
        LabToxicity(
            id=f"{subject}-lab2",
            time=at,
            data=_lab(f"{subject}-lab2", subject, "Alanine aminotransferase increased", 3, at),
            **common,
        ),
        LabToxicity(
            id=f"{subject}-lab3",
            time=at,
            data=_lab(f"{subject}-lab3", subject, "Neutrophil count decreased", 3, at),
            **common,
        ),
        SaeUpdated(id=f"{subject}-sae2", time=at, data=_sae(f"{subject}-sae2", subject, 2, 4, at), **common),
        AssessmentMissed(id=f"{subject}-miss1", time=at, data=missed, **common),
    ]


def signal_stream(subjects: int) -> list[Message]:
    out = []
    for n in range(subjects):
        subject = f"101-{n:04d}"
        key = message_key(TRIAL, subject)
        out += [Message(key, s.model_dump_json().encode()) for s in subject_signals(subject)]
    return out


def nothing(session: Session, envelope: SignalEnvelope, now: datetime) -> Sequence[Outgoing]:
    return []


async def drain(database_url: str, topic: str, total: int, rule: str, *, limit_s: float) -> tuple[float, int]:
    """Signals per second for notify's consumer to work through `total` signals already on `topic`."""
    engine = make_engine(database_url)
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=True)
    protocol = load_protocol(None)
    rules: dict[str, Any] = {"nothing": per_record(nothing), "notify": open_batch(protocol, CONSOLE_URL)}
    spec: ConsumerSpec[SignalEnvelope] = ConsumerSpec(
        service="notify",
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        bootstrap_servers=BOOTSTRAP,
        consume_topic=topic,
        produce_topics=[],
        parse=SIGNAL_ADAPTER.validate_json,
        event_id=lambda envelope: envelope.id,
        apply=rules[rule],
        batched=True,
    )
    registry = CollectorRegistry()
    committed = asyncio.Event()
    service = ConsumerService(spec, engine=engine, clock=SystemClock(), registry=registry, on_committed=committed.set)

    try:
        return await timed_drain(service, registry, name="notify", total=total, limit_s=limit_s, committed=committed)
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Arrivals:
    """When the mail server received each page (perf_counter), by the subject named in its mail."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def on_message(self, path: Path, _envelope: Any) -> None:
        arrived = time.perf_counter()
        message = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes(), headersonly=True)
        found = PAGE_SUBJECT.search(" ".join(str(message["Subject"] or "").split()))
        if found:
            self.at.setdefault(found.group(1), arrived)


async def page_latency(database_url: str, pages: int, backlog: int) -> tuple[list[float], list[float]]:
    """(commit -> SMTP receipt of the page, the same mail straight to the channel), seconds each."""
    engine = make_engine(database_url)
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=True)
    protocol = load_protocol(None)
    clock = SystemClock()
    port = _free_port()
    arrivals = Arrivals()
    channel = SmtpChannel(SmtpConfig(host="127.0.0.1", port=port, sender="sentinel@bench.example"))
    dispatcher = DeliveryDispatcher(
        engine=engine,
        channel=channel,
        clock=clock,
        metrics=DeliveryMetrics.create(CollectorRegistry()),
        max_attempts=6,
        base_backoff_seconds=5,
        poll_seconds=1.0,
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        MailCatcher(Path(tmp) / "mail", port=port, on_message=arrivals.on_message),
    ):
        with Session(engine) as session, session.begin():  # digest notices waiting for their window
            for n in range(backlog):
                for signal in subject_signals(f"BL-{n:04d}")[-1:]:
                    apply_signal(session, signal, clock.now(), protocol=protocol)
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        latencies: list[float] = []
        direct: list[float] = []
        try:
            for n in range(pages):
                subject = f"PG-{uuid.uuid4().hex[:8]}"
                signal = subject_signals(subject)[1]

                def commit(signal: EnvelopeBase = signal) -> None:
                    with Session(engine) as session, session.begin():
                        apply_signal(session, signal, clock.now(), protocol=protocol)  # type: ignore[arg-type]

                await asyncio.to_thread(commit)
                committed = time.perf_counter()
                dispatcher.wake()
                await wait_for_mail(arrivals, subject)
                latencies.append(arrivals.at[subject] - committed)
                # Baseline: the same kind of mail, handed straight to the channel.
                direct_subject = f"DI-{n:04d}-{uuid.uuid4().hex[:4]}"
                started = time.perf_counter()
                await EmailDelivery(channel).deliver(
                    OutgoingMessage(
                        delivery_id=uuid.uuid4().hex,
                        recipient="officer@bench.example",
                        subject=f"SAE report due: subject {direct_subject}",
                        text="x",
                        html="<p>x</p>",
                    )
                )
                await wait_for_mail(arrivals, direct_subject)
                direct.append(arrivals.at[direct_subject] - started)
        finally:
            stop.set()
            dispatcher.wake()
            await running
            engine.dispose()
    return latencies, direct


async def wait_for_mail(arrivals: Arrivals, subject: str, limit: float = 60) -> None:
    """Poll every 2 ms: the mail catcher's thread records the arrival time itself, so polling adds no error."""
    deadline = time.monotonic() + limit
    while subject not in arrivals.at:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no page for {subject} after {limit} s")
        await asyncio.sleep(0.002)


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


async def run() -> None:
    subjects = env_int("SUBJECTS", 200)
    limit_s = env_int("LIMIT_SECONDS", 20)
    pages = env_int("PAGES", 20)
    databases = env_list("DATABASES", "sqlite,postgresql")
    messages = signal_stream(subjects)
    print(f"notify drain: {subjects} subjects x 6 signals; Kafka {BOOTSTRAP}")
    topic = fresh_topic("notify")
    await produce(topic, messages)
    try:
        for database in databases:
            with fresh_database(database) as url:
                baseline, done = await drain(url, topic, len(messages), "nothing", limit_s=limit_s)
            print(f"{f'baseline: inbox only, {database}':<40} {done:>6} signals {baseline:>9,.0f} signals/s")
            with fresh_database(database) as url:
                rate, done = await drain(url, topic, len(messages), "notify", limit_s=limit_s)
            ratio = f"ratio {rate / baseline:5.2f}"
            print(f"{f'notify, {database}':<40} {done:>6} signals {rate:>9,.0f} signals/s   {ratio}")
    finally:
        await delete_topics(BOOTSTRAP, [topic])
    for database in databases:
        with fresh_database(database) as url:
            latencies, direct = await page_latency(url, pages, backlog=200)
        print(
            f"{f'SAE page commit -> SMTP receipt, {database}':<40} p50 {_ms(latencies, 0.5):6.1f} ms  "
            f"max {max(latencies) * 1000:6.1f} ms | straight to SMTP p50 {_ms(direct, 0.5):5.1f} ms  "
            f"ratio p50 {statistics.median(latencies) / statistics.median(direct):4.1f}"
        )


def main() -> None:
    tune_allocator()  # as `sentinel run notify` does at start
    tune_gc()
    asyncio.run(run())


if __name__ == "__main__":
    main()
