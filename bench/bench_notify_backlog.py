"""Page latency after an SMTP outage: `python -m bench.bench_notify_backlog [N]`.

N missed-assessment notices (two recipients each) pile up while nothing listens on the SMTP port; an SAE
arrives; then a real SMTP server (aiosmtpd) comes back. Prints how long after the server's return each SAE
page and the whole backlog were handed over, and how many mails the backlog became. The baseline is the
same run with one notice per mail, strictly in queue order (urgency ignored, no digest): what notify did
before issue 15.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import update
from sqlmodel import Session

from services.devstack.mail_catcher import MailCatcher
from services.notify import models
from services.notify.channels.email import SmtpChannel, SmtpConfig
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.models import Delivery
from services.notify.signals import apply_signal
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import AssessmentMissed, AssessmentMissedData, AwarenessBasis, SaeData, SaeDetected
from shared.protocol import load_protocol

START = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
TRIAL = "NCT07212335"


def _missed(n: int) -> AssessmentMissed:
    return AssessmentMissed(
        id=f"sig-miss-{n}",
        source="/services/safety",
        subject=f"101-{n:04d}",
        time=START,
        trialid=TRIAL,
        data=AssessmentMissedData(
            site_id="101",
            subject_id=f"101-{n:04d}",
            assessment="day 14",
            due_from=START - timedelta(days=3),
            due_until=START - timedelta(days=1),
            missing=["lab"],
        ),
    )


def _sae(at: datetime) -> SaeDetected:
    return SaeDetected(
        id="sig-sae-1",
        source="/services/safety",
        subject="101-9999",
        time=at,
        trialid=TRIAL,
        data=SaeData(
            site_id="101",
            subject_id="101-9999",
            ae_id="AE-1",
            ae_version=1,
            term="Cytokine release syndrome",
            grade=3,
            criteria=["hospitalization"],
            relatedness=None,
            outcome=None,
            onset=None,
            awareness_at=at,
            awareness_basis=AwarenessBasis.SITE,
            received_at=at,
            source_event_id="evt-sae-1",
        ),
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(count: int, *, prioritised: bool) -> tuple[float, float, int]:
    """Seconds from the SMTP server's return to the last SAE page, to the end of the backlog; mails sent."""
    protocol = load_protocol(None)
    clock = FakeClock(START)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'notify.db'}")
        create_tables(engine, models.TABLES)
        with Session(engine) as session, session.begin():
            for n in range(count):
                apply_signal(session, _missed(n), START, protocol=protocol)
            clock.advance(timedelta(minutes=10))
            apply_signal(session, _sae(clock.now()), clock.now(), protocol=protocol)
            if not prioritised:  # the old queue: one class, one mail per notice, oldest first
                session.execute(update(Delivery).values(urgency=1))
        port = _free_port()
        dispatcher = DeliveryDispatcher(
            engine=engine,
            channel=SmtpChannel(SmtpConfig(host="127.0.0.1", port=port, sender="sentinel@bench.example")),
            clock=clock,
            metrics=DeliveryMetrics.create(CollectorRegistry()),
            max_attempts=50,
            base_backoff_seconds=1,
            concurrency=4 if prioritised else 1,
            batch_size=50 if prioritised else 10,
        )
        sae_pages: list[float] = []
        with MailCatcher(Path(tmp) / "mail", port=port, on_message=lambda path, _: _note(path, sae_pages)) as _:
            started = time.perf_counter()

            async def drain() -> None:
                while await dispatcher.dispatch_due():
                    pass

            asyncio.run(drain())
            total = time.perf_counter() - started
            mails = len(list((Path(tmp) / "mail").glob("*.eml")))
        engine.dispose()
    if len(sae_pages) < 2:
        raise RuntimeError("the SAE pages were not delivered")
    return max(sae_pages) - started, total, mails


def _note(path: Path, sae_pages: list[float]) -> None:
    if b"SAE report due" in path.read_bytes():
        sae_pages.append(time.perf_counter())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    count = int(args[0]) if args else 1000
    page, total, mails = run(count, prioritised=True)
    old = run(count, prioritised=False)
    old_page = old[0]
    print(f"notify backlog: {count} missed assessments x 2 recipients + 1 SAE (2 pages) after an SMTP outage")
    for label, (p, t, m) in (("pages first + digests", (page, total, mails)), ("in order, one by one", old)):
        print(f"  {label:<22} SAE pages after {p:.2f} s; backlog done in {t:.2f} s, {m} mails")
    print(f"  page latency ratio: {old_page / page:.0f}x")


if __name__ == "__main__":
    main()
