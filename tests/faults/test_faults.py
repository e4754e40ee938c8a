"""Fault scenarios on real processes: each kills or starves one part while SAEs stream through, then counts
what a person would notice (see harness.py) and adds a row to the printed report.

Bounded: a handful of SAEs per scenario, outages of 10-20 s, every wait with a deadline; the whole suite
takes a few minutes. Each scenario says which fix it depends on when it fails before that fix lands.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.devstack.mail_catcher import MailCatcher
from services.notify.settings import NotifySettings
from shared.events import AssessmentMissed, AssessmentMissedData, message_key
from tests.e2e.stack import Stack
from tests.faults.harness import (
    TRIAL,
    ArrivalLog,
    Edc,
    Outcome,
    Stream,
    count_alerts,
    count_pages,
    count_unsettled,
    kill,
    sae_event,
    sae_pages,
    timed,
    utcnow,
    wait_for_leases,
)
from tests.kafka_tools import publish_sync
from tests.polling import wait_for
from tests.signal_factories import sae_detected

pytestmark = pytest.mark.faults
SAES = 12
PIPELINE = ("ingest", "safety", "notify")
# The fixes each scenario guards (printed beside a scenario that fails: a regression of that fix).
DEFECT_4 = "notifyrel's fix of defect 4 (lease heartbeat, stable Message-ID, attempt recorded before the hand-off)"
DEFECT_3 = "ingest's fix of defect 3 (503 + Retry-After, not 500, when its database cannot be written)"


@contextmanager
def running(
    root: Path,
    broker: Any,
    services: tuple[str, ...] = PIPELINE,
    *,
    database_url: str | None = None,
    catcher_running: bool = True,
) -> Iterator[tuple[Stack, MailCatcher, ArrivalLog]]:
    """The services on the suite's broker, fresh topics, a mail catcher that logs when each mail arrived."""
    arrivals = ArrivalLog()
    catcher = MailCatcher(root / "mail", port=0, on_message=arrivals)
    catcher.start()
    port = catcher.port
    if not catcher_running:
        catcher.stop()
        catcher = MailCatcher(root / "mail", port=port, on_message=arrivals)
    prefix = f"f{uuid.uuid4().hex[:10]}"
    stack = Stack(root, kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, smtp_port=port)
    if database_url is not None:
        stack.env["SENTINEL_DATABASE_URL"] = database_url
    try:
        for service in services:
            stack.start(service)
            if database_url is not None:
                stack.wait_ready(service)  # one database: let the first migrate before the next starts
        for service in services:
            stack.wait_ready(service)
        yield stack, catcher, arrivals
    finally:
        stack.stop()
        catcher.stop()


def notify_database(stack: Stack) -> str:
    return stack.env.get("SENTINEL_DATABASE_URL") or f"sqlite:///{stack.root / 'var' / 'notify.db'}"


def subjects(count: int, site: str = "101") -> list[str]:
    return [f"{site}-{n:03d}" for n in range(1, count + 1)]


def settle(outcome: Outcome, stack: Stack, catcher: MailCatcher, names: list[str], *, timeout: float = 60) -> None:
    count_pages(outcome, catcher, names, timeout=timeout)
    count_alerts(outcome, stack, names)
    count_unsettled(outcome, notify_database(stack), catcher)


def restart(stack: Stack, name: str, service: str | None = None) -> None:
    stack.start(service or name, name=name)
    stack.wait_ready(name)


@pytest.mark.parametrize(
    "service",
    [
        "ingest",
        "safety",
        # A kill can land between the SMTP hand-off and its commit (see the next scenario): same fix.
        "notify",
    ],
)
def test_kill_9_during_a_stream(service: str, tmp_path: Path, private_broker: Any, report: Any) -> None:
    outcome = Outcome(
        f"kill -9 {service} during a stream", saes=SAES, depends_on=DEFECT_4 if service == "notify" else ""
    )
    names = subjects(SAES)
    with running(tmp_path, private_broker) as (stack, catcher, _), timed(outcome):
        edc = Edc(stack.url("ingest"), stack.secret, outcome.answers)
        now = utcnow()
        with Stream(edc, [sae_event(s, now) for s in names]) as stream:
            stream.wait_accepted(SAES // 3)
            kill(stack, service)
            restart(stack, service)
            stream.finish()
        if service == "notify":  # a page it was handing over when killed is retaken when its lease ends
            wait_for_leases(notify_database(stack), lease_seconds=NotifySettings().delivery_lease_seconds)
        settle(outcome, stack, catcher, names)
    report(outcome)
    assert not outcome.problems, outcome.problems


def test_notify_killed_after_the_smtp_hand_off_before_its_commit(
    tmp_path: Path, private_broker: Any, report: Any
) -> None:
    """The mail server has the page; notify dies before it records that: the page must not go twice as two
    different messages, and must not wait minutes in a dead process's lease."""
    count = 4
    outcome = Outcome("kill -9 notify after SMTP accepted a page", saes=count, depends_on=DEFECT_4)
    names = subjects(count)
    with running(tmp_path, private_broker) as (stack, catcher, arrivals), timed(outcome):
        notify = stack.processes["notify"]
        arrivals.on_sae_page = lambda: os.kill(notify.pid, signal.SIGKILL)  # before the 250 reaches notify
        edc = Edc(stack.url("ingest"), stack.secret, outcome.answers)
        now = utcnow()
        with Stream(edc, [sae_event(s, now) for s in names]) as stream:
            stream.finish()
        assert notify.wait(timeout=60) == -signal.SIGKILL
        restart(stack, "notify")
        # The pages the killed process was handing over (one, or one per lane) are retaken when its lease ends.
        wait_for_leases(notify_database(stack), lease_seconds=NotifySettings().delivery_lease_seconds)
        settle(outcome, stack, catcher, names, timeout=30)
    outcome.note = "the killed notify held its lease on the page it was sending; it is re-sent after the lease expires"
    report(outcome)
    assert not outcome.problems, outcome.problems


def test_broker_down_during_a_stream(tmp_path: Path, private_broker: Any, report: Any) -> None:
    from services.devstack import kafka_broker as kb

    outage = 10.0
    outcome = Outcome(f"broker down {outage:.0f} s during a stream", saes=SAES)
    names = subjects(SAES)
    with running(tmp_path, private_broker) as (stack, catcher, _), timed(outcome):
        edc = Edc(stack.url("ingest"), stack.secret, outcome.answers)
        now = utcnow()
        with Stream(edc, [sae_event(s, now) for s in names]) as stream:
            stream.wait_accepted(SAES // 3)
            kb.down(private_broker)
            try:
                time.sleep(outage)  # the length of the outage is the fault itself, not a wait for an outcome
            finally:
                kb.up(private_broker)
            stream.finish(timeout=240)
        settle(outcome, stack, catcher, names, timeout=60)
    report(outcome)
    assert not outcome.problems, outcome.problems


def test_postgresql_down_during_a_stream(
    tmp_path: Path, private_broker: Any, private_postgres: dict[str, str], fault_database: str, report: Any
) -> None:
    outage = 10.0
    outcome = Outcome(
        f"PostgreSQL down {outage:.0f} s during a stream",
        saes=SAES,
        depends_on=DEFECT_3,
    )
    names = subjects(SAES)
    env = {**os.environ, **{k: v for k, v in private_postgres.items() if k.startswith("SENTINEL_TEST_PG_")}}
    with running(tmp_path, private_broker, database_url=fault_database) as (stack, catcher, _), timed(outcome):
        edc = Edc(stack.url("ingest"), stack.secret, outcome.answers)
        now = utcnow()
        with Stream(edc, [sae_event(s, now) for s in names]) as stream:
            stream.wait_accepted(SAES // 3)
            subprocess.run([private_postgres["script"], "stop"], env=env, check=True, capture_output=True)
            try:
                time.sleep(outage)  # the outage itself
            finally:
                subprocess.run([private_postgres["script"], "start"], env=env, check=True, capture_output=True)
            stream.finish(timeout=240)
        settle(outcome, stack, catcher, names, timeout=60)
    report(outcome)
    assert not outcome.problems, outcome.problems


def test_smtp_down_with_bulk_mail_queued_ahead_of_sae_pages(tmp_path: Path, private_broker: Any, report: Any) -> None:
    """SMTP down while 150 missed-assessment notices and then 6 SAEs arrive; once it is back, how long do the
    SAE pages take, and how many low-urgency mails go out before the last of them?"""
    outage, bulk, count = 15.0, 150, 6
    outcome = Outcome(
        f"SMTP down {outage:.0f} s, {bulk} notices queued ahead of SAE pages",
        saes=count,
        depends_on="notifyrel's fix of defect 5 (pages first, concurrent sends, digests) for the latency",
    )
    names = subjects(count, site="102")
    with (
        running(tmp_path, private_broker, ("notify",), catcher_running=False) as (stack, catcher, arrivals),
        timed(outcome),
    ):
        now = utcnow()
        notices = [missed_assessment(n, now) for n in range(bulk)]
        saes = [sae_detected(s, aware=now - timedelta(minutes=30), site_id="102") for s in names]
        publish_sync(
            stack.env["SENTINEL_KAFKA_BOOTSTRAP_SERVERS"],
            stack.env["SENTINEL_SIGNALS_TOPIC"],
            [(message_key(TRIAL, s.subject), s.model_dump_json().encode()) for s in [*notices, *saes]],
        )
        outage_ends = time.monotonic() + outage
        # All of it queued while SMTP is down (on a slow machine that can take longer than the outage itself).
        wait_for(lambda: sae_alerts(stack) >= count, timeout=90, what="the SAE alerts (while SMTP is down)")
        time.sleep(max(outage_ends - time.monotonic(), 0))  # the rest of the outage
        restored = time.monotonic()
        catcher.start()
        settle(outcome, stack, catcher, names, timeout=150)
    arrived = sorted(arrivals.arrivals)
    page_times = [t for t, path in arrived if b"SAE report due" in path.read_bytes()]
    outcome.page_latency = [t - restored for t in page_times]
    if page_times:
        last = max(page_times)
        outcome.bulk_before_last_page = sum(
            1 for t, p in arrived if t < last and b"SAE report due" not in p.read_bytes()
        )
    report(outcome)
    assert not outcome.problems, outcome.problems


def test_full_disk_under_the_sqlite_databases(tmp_path: Path, private_broker: Any, report: Any) -> None:
    """The three SQLite databases on a small tmpfs that fills up mid-stream, then frees again."""
    var = tmp_path / "var"
    var.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(var)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        report(Outcome("full disk (tmpfs under the SQLite files)", note=f"NOT RUN: cannot mount: {mounted.stderr}"))
        pytest.skip(f"a full disk needs a tmpfs (root): {mounted.stderr.strip()}")
    outcome = Outcome(
        "full disk under the SQLite files during a stream",
        saes=SAES,
        depends_on=f"{DEFECT_3}; {DEFECT_4} (a send whose record fails on the full disk is leased for 5 min)",
    )
    names = subjects(SAES)
    filler = var / "filler"
    try:
        with running(tmp_path, private_broker) as (stack, catcher, _), timed(outcome):
            edc = Edc(stack.url("ingest"), stack.secret, outcome.answers)
            now = utcnow()
            with Stream(edc, [sae_event(s, now) for s in names]) as stream:
                stream.wait_accepted(SAES // 3)
                fill(filler)
                try:
                    wait_for(lambda: outcome.answers.total() > SAES // 3 + 3, timeout=20, what="answers on a full disk")
                finally:
                    filler.unlink()
                stream.finish(timeout=240)
            settle(outcome, stack, catcher, names, timeout=45)
    finally:
        subprocess.run(["umount", "-l", str(var)], check=False, capture_output=True)
    report(outcome)
    assert not outcome.problems, outcome.problems


def test_two_notify_replicas_one_killed_mid_stream(
    tmp_path: Path, private_broker: Any, fault_database: str, report: Any
) -> None:
    count = 20
    outcome = Outcome("two notify replicas on PostgreSQL, one kill -9", saes=count, depends_on=DEFECT_4)
    names = subjects(count, site="103")
    with (
        running(tmp_path, private_broker, ("notify",), database_url=fault_database) as (stack, catcher, _),
        timed(outcome),
    ):
        stack.processes["notify-1"] = stack.processes.pop("notify")
        stack.ports["notify-1"] = stack.ports["notify"]
        restart(stack, "notify-2", "notify")
        now = utcnow()
        saes = [sae_detected(s, aware=now - timedelta(minutes=30), site_id="103") for s in names]
        publish_sync(
            stack.env["SENTINEL_KAFKA_BOOTSTRAP_SERVERS"],
            stack.env["SENTINEL_SIGNALS_TOPIC"],
            [(message_key(TRIAL, s.subject), s.model_dump_json().encode()) for s in saes],
        )
        wait_for(lambda: len(sae_pages(catcher.messages())) >= count // 2, timeout=60, what="half the pages")
        kill(stack, "notify-1")
        restart(stack, "notify-1", "notify")
        # What notify-1 was handing over when killed (the mail server may have it already) is retaken when its
        # lease ends and re-sent under the same Message-ID, as in the single-notify scenarios: wait for that.
        wait_for_leases(fault_database, lease_seconds=NotifySettings().delivery_lease_seconds)
        count_pages(outcome, catcher, names, timeout=30)
        count_alerts(outcome, stack, names, service="notify-2")
        count_unsettled(outcome, fault_database, catcher)
    report(outcome)
    assert not outcome.problems, outcome.problems


def missed_assessment(n: int, now: Any) -> AssessmentMissed:
    subject = f"109-{n:03d}"
    return AssessmentMissed(
        id=f"missed-{n}",
        source="/services/safety",
        subject=subject,
        time=now,
        trialid=TRIAL,
        data=AssessmentMissedData(
            site_id="109",
            subject_id=subject,
            assessment="day 7",
            due_from=now - timedelta(days=3),
            due_until=now - timedelta(days=1),
            missing=["lab"],
        ),
    )


def sae_alerts(stack: Stack) -> int:
    import httpx

    with suppress(httpx.HTTPError):
        response = httpx.get(
            stack.url("notify") + "/v1/alerts",
            params={"kind": "sae", "limit": 1000},
            headers={"authorization": f"Bearer {stack.token}"},
            timeout=5,
        )
        return sum(1 for a in response.json() if a["kind"] == "sae")
    return 0


def fill(path: Path) -> None:
    """Write until the file system says it is full (unbuffered, so nothing is left to flush at close)."""
    chunk = b"\0" * (1 << 16)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(descriptor, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(descriptor)
