"""Issue 15, defect 5: pages waited behind bulk mail (one sender, strictly in queue order).

Now pages (SAE, DLT, escalations, overdue) go first, sends run concurrently within a bound, and
low-urgency notices leave as one digest per recipient. Fake clock, recording channel: deterministic.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.notify import urgency
from services.notify.dispatcher import DeliveryDispatcher, DeliveryMetrics
from services.notify.models import Alert, Delivery
from shared.events import AssessmentMissed, AssessmentMissedData
from tests.signal_factories import grade4_platelets
from tests.unit.conftest import START, TRIAL, FakeChannel
from tests.unit.notify.conftest import Notifier

OFFICER = "safety.officer@sentinel.example"
MONITOR = "medical.monitor@sentinel.example"


def missed(n: int) -> AssessmentMissed:
    return AssessmentMissed(
        id=f"sig-miss-{n}",
        source="/services/safety",
        subject=f"S-{n:03d}",
        time=START,
        trialid=TRIAL,
        data=AssessmentMissedData(
            site_id="SITE-1",
            subject_id=f"S-{n:03d}",
            assessment="week 1",
            due_from=START - timedelta(days=3),
            due_until=START - timedelta(days=1),
            missing=["lab"],
        ),
    )


def dispatcher(notifier: Notifier, channel: FakeChannel | None = None, **options: Any) -> DeliveryDispatcher:
    """A dispatcher of its own on the notifier's database and clock (3 attempts, 10 s backoff)."""
    return DeliveryDispatcher(
        engine=notifier.engine,
        channel=channel or notifier.channel,
        clock=notifier.clock,
        metrics=DeliveryMetrics.create(CollectorRegistry()),
        max_attempts=3,
        base_backoff_seconds=10,
        **options,
    )


def sent_subjects(channel: FakeChannel) -> list[str]:
    return [str(m["Subject"]) for m in channel.sent]


async def drain(notifier: Notifier) -> None:
    while await notifier.timers.run_due() or await notifier.dispatcher.dispatch_due():
        pass


async def test_after_an_outage_sae_pages_go_before_the_backlog_of_bulk_mail(notifier: Notifier, make_sae: Any) -> None:
    notifier.channel.failures = 10**6  # SMTP is down
    for n in range(40):
        notifier.apply(missed(n))
    notifier.clock.advance(timedelta(minutes=10))
    await drain(notifier)  # every bulk notice tried and failed during the outage
    notifier.apply(make_sae(subject_id="S-900", awareness_at=notifier.clock.now()))  # the SAE arrives last
    notifier.channel.failures = 0  # SMTP is back
    notifier.clock.advance(timedelta(hours=2))  # every retry is due again, together with the SAE page
    await drain(notifier)
    subjects = sent_subjects(notifier.channel)
    pages = sorted(f"{m['To']}: {str(m['Subject']).split(':')[0]}" for m in notifier.channel.sent[:3])
    assert pages == [
        f"{MONITOR}: [NCT07212335] Escalation step 2 of 3, not acknowledged",
        f"{MONITOR}: [NCT07212335] SAE report due 2026-03-02 08",
        f"{OFFICER}: [NCT07212335] SAE report due 2026-03-02 08",
    ], "the SAE's first page, and the escalation that fell due meanwhile, before any bulk mail"
    digests = notifier.channel.sent[3:]
    assert all(str(m["Subject"]).startswith("Digest: 40 notices") for m in digests), subjects
    assert sorted(str(m["To"]) for m in digests) == [MONITOR, OFFICER], "one mail per recipient, not 40"


async def test_thirty_missed_assessments_are_one_digest_per_recipient(notifier: Notifier) -> None:
    for n in range(30):
        notifier.apply(missed(n))
        notifier.clock.advance(timedelta(seconds=5))
    assert {d.urgency for d in notifier.deliveries()} == {urgency.DIGEST}
    assert await notifier.at(START + timedelta(minutes=4)) == [], "held for the digest window"
    sent = await notifier.at(START + timedelta(minutes=5))
    assert sorted(to for to, _ in sent) == [MONITOR, OFFICER]
    mail: EmailMessage = notifier.channel.sent[0]
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    for n in range(30):
        assert f"subject S-{n:03d}" in text
    assert text.index("S-000") < text.index("S-029"), "in the order they were raised"
    assert len(str(mail["X-Sentinel-Digest-Of"]).split(", ")) == 30
    assert {d.status for d in notifier.deliveries()} == {"sent"}
    alert = notifier.rows(Alert)[0]
    [delivered] = [h for h in notifier.history(alert.id) if h.action == "delivered" and OFFICER in h.detail]
    assert "in a digest of 30 notices" in delivered.detail
    assert await notifier.at(START + timedelta(hours=1)) == []


async def test_a_failed_digest_is_retried_whole_and_keeps_its_message_id(notifier: Notifier) -> None:
    for n in range(3):
        notifier.apply(missed(n))
    notifier.channel.failures = 2
    assert await notifier.at(START + timedelta(minutes=5)) == []
    assert {d.attempts for d in notifier.deliveries()} == {1}
    assert {d.status for d in notifier.deliveries()} == {"pending"}
    sent = await notifier.at(START + timedelta(minutes=7))
    assert len(sent) == 2
    assert all(subject.startswith("Digest: 3 notices") for _, subject in sent)
    assert all(m["X-Sentinel-Attempt"] == "2" for m in notifier.channel.sent)


async def test_escalations_and_overdue_pages_are_pages(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    await notifier.at(START + timedelta(days=2))  # every escalation step, reminder and overdue page
    by_subject = {d.subject: d.urgency for d in notifier.deliveries()}
    assert {u for s, u in by_subject.items() if "Escalation step" in s or "OVERDUE" in s} == {urgency.CRITICAL}
    assert set(by_subject.values()) == {urgency.CRITICAL}, "every message about an SAE is a critical page"


def test_urgency_classes() -> None:
    assert urgency.urgency_of(alert_kind="assessment_missed", has_open_obligation=False) == urgency.DIGEST
    assert urgency.urgency_of(alert_kind="lab_toxicity", has_open_obligation=False) == urgency.NOTICE
    assert urgency.urgency_of(alert_kind="a_new_kind", has_open_obligation=False) == urgency.NOTICE
    assert urgency.urgency_of(alert_kind="lab_toxicity", has_open_obligation=True) == urgency.PAGE
    assert urgency.urgency_of(alert_kind="dead_letter", has_open_obligation=False) == urgency.CRITICAL
    assert urgency.urgency_of(alert_kind="sae", has_open_obligation=True, timer_kind="failover") == urgency.CRITICAL
    assert urgency.urgency_of(alert_kind="acute_reaction", has_open_obligation=False) == urgency.CRITICAL
    assert urgency.urgency_of(alert_kind="lab_toxicity", has_open_obligation=True, timer_kind="overdue") == 0
    assert urgency.urgency_of(alert_kind="lab_toxicity", has_open_obligation=False, timer_kind="escalate") == 0
    assert (
        urgency.urgency_of(alert_kind="assessment_missed", has_open_obligation=False, timer_kind="failover")
        == urgency.DIGEST
    ), "a failed bulk notice fails over in a digest, not as a page"


class GatedChannel(FakeChannel):
    """Holds every hand-off until released, and records how many were in flight at once."""

    def __init__(self, bound: int) -> None:
        super().__init__()
        self.bound = bound
        self.in_flight = 0
        self.most = 0
        self.release = asyncio.Event()
        self.full = asyncio.Event()

    async def send(self, message: EmailMessage) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.bound:
            self.full.set()
        try:
            await self.release.wait()
            self.sent.append(message)
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("bound", [1, 3])
async def test_sends_run_concurrently_within_the_bound(notifier: Notifier, make_sae: Any, bound: int) -> None:
    for n in range(4):
        notifier.apply(make_sae(subject_id=f"S-{n}", ae_id=f"AE-{n}", signal_id=f"sig-{n}"))
    channel = GatedChannel(bound)
    sender = dispatcher(notifier, channel, concurrency=bound)
    run = asyncio.create_task(sender.dispatch_due())
    await asyncio.wait_for(channel.full.wait(), timeout=5)
    for _ in range(20):
        await asyncio.sleep(0)  # give a bound-breaking dispatcher every chance to start one more
    assert channel.in_flight == bound
    channel.release.set()
    assert await run == 8
    assert channel.most == bound and len(channel.sent) == 8
    assert {d.status for d in notifier.rows(Delivery)} == {"sent"}


async def test_a_page_queued_during_a_bulk_backlog_leaves_in_the_next_batch(notifier: Notifier, make_sae: Any) -> None:
    """Batches of 10: the page does not wait for the 200 notices queued before it."""
    for n in range(100):
        notifier.apply(missed(n))
    notifier.clock.advance(timedelta(minutes=5))
    sender = dispatcher(notifier, batch_size=10)
    notifier.apply(make_sae(awareness_at=notifier.clock.now()))
    await sender.dispatch_due()
    assert all("SAE report due" in s for s in sent_subjects(notifier.channel)[:2])


async def test_an_sae_page_goes_before_the_lab_pages_a_backfill_queued(notifier: Notifier, make_sae: Any) -> None:
    """A backfill's grade-4 platelets: 60 lab alerts, each with a review deadline, so each a page; then an SAE. In
    batches of 10 the SAE's pages leave in the first, not after the 120 lab pages queued before them."""
    for n in range(60):
        notifier.apply(grade4_platelets(n, at=START, site="SITE-1"))
    assert {d.urgency for d in notifier.deliveries()} == {urgency.PAGE}
    notifier.apply(make_sae(awareness_at=notifier.clock.now()))
    sender = dispatcher(notifier, batch_size=10)
    await sender.dispatch_due()
    subjects = sent_subjects(notifier.channel)
    assert len(subjects) == 10 and all("SAE report due" in s for s in subjects[:2]), subjects[:3]


class RefusesOne(FakeChannel):
    """The officer's mailbox refuses every mail; everyone else's works."""

    async def send(self, message: EmailMessage) -> None:
        if str(message["To"]) == OFFICER:
            from services.notify.channels import DeliveryError

            raise DeliveryError("550 mailbox unavailable")
        self.sent.append(message)


async def test_failed_bulk_notices_fail_over_as_a_digest_not_as_pages(engine: Any, protocol: Any, clock: Any) -> None:
    from services.notify import models
    from shared.db import create_tables

    create_tables(engine, models.TABLES)
    notifier = Notifier(engine=engine, protocol=protocol, clock=clock, channel=RefusesOne())
    for n in range(20):
        notifier.apply(missed(n))
    for minutes in (5, 10, 20, 40, 80):
        await notifier.at(START + timedelta(minutes=minutes))
    failed = [d for d in notifier.deliveries() if d.recipient == OFFICER]
    assert {d.status for d in failed} == {"failed"} and len(failed) == 20
    failovers = [d for d in notifier.deliveries() if "Could not reach the previous contact" in d.subject]
    assert len(failovers) == 20 and {d.urgency for d in failovers} == {urgency.DIGEST}
    assert {d.recipient for d in failovers} == {MONITOR}, "the next tier"
    to_monitor = [str(m["Subject"]) for m in notifier.channel.sent if str(m["To"]) == MONITOR]
    assert len(to_monitor) == 2, "the monitor's own digest, and one digest of the 20 failovers: not 20 pages"
    assert all(subject.startswith("Digest: 20 notices") for subject in to_monitor)


class NoticesHeld(FakeChannel):
    """Holds every mail but SAE pages until released: a slow mail server in the middle of a bulk batch."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.paged = asyncio.Event()

    async def send(self, message: EmailMessage) -> None:
        if "SAE report due" in str(message["Subject"]):
            self.sent.append(message)
            if len(self.sent) == 2:
                self.paged.set()
            return
        self.holding.set()
        await self.release.wait()
        self.sent.append(message)


async def test_a_page_queued_while_notices_are_handed_over_leaves_before_they_finish(
    notifier: Notifier, make_sae: Any
) -> None:
    """The page lane: the SAE's two pages go while the digest batch started before them is still in flight."""
    for n in range(3):
        notifier.apply(missed(n))
    notifier.clock.advance(timedelta(minutes=5))
    channel = NoticesHeld()
    sender = dispatcher(notifier, channel, poll_seconds=3600)  # only the commit's wake-up brings the page out in time
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.wait_for(channel.holding.wait(), timeout=5)
        notifier.apply(make_sae(awareness_at=notifier.clock.now()))
        sender.wake()  # what the consumer's commit hook does
        await asyncio.wait_for(channel.paged.wait(), timeout=5)
        assert [str(m["Subject"]).startswith("[NCT07212335] SAE report due") for m in channel.sent] == [True, True]
        assert not channel.release.is_set(), "the digests are still being handed over"
        channel.release.set()
    finally:
        stop.set()
        sender.wake()
        await asyncio.wait_for(running, timeout=5)
    assert [str(m["Subject"]).startswith("Digest: 3 notices") for m in channel.sent[2:]] == [True, True]
    assert {d.status for d in notifier.deliveries()} == {"sent"}


async def test_an_sae_page_leaves_while_a_batch_of_other_pages_is_handed_over(
    notifier: Notifier, make_sae: Any
) -> None:
    """The page lane takes the critical class while the first lane hands over lab pages (a backfill's, each with
    a review deadline): the SAE's two pages do not wait for the lab batch in flight."""
    for n in range(5):
        notifier.apply(grade4_platelets(n, at=START, site="SITE-1"))
    channel = NoticesHeld()
    sender = dispatcher(notifier, channel, poll_seconds=3600)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.wait_for(channel.holding.wait(), timeout=5)
        notifier.apply(make_sae(awareness_at=notifier.clock.now()))
        sender.wake()
        await asyncio.wait_for(channel.paged.wait(), timeout=5)
        assert not channel.release.is_set(), "the lab pages are still being handed over"
        channel.release.set()
    finally:
        stop.set()
        sender.wake()
        await asyncio.wait_for(running, timeout=5)
    assert [str(m["Subject"]).startswith("[NCT07212335] SAE report due") for m in channel.sent[:2]] == [True, True]
    assert {d.status for d in notifier.deliveries()} == {"sent"}
