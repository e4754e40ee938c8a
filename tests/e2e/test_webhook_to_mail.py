"""End to end, on real processes, broker and SMTP: signed webhook -> ingest -> safety -> notify -> mail."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import post_signed, scenario_events
from tests.e2e.stack import Stack
from tests.polling import wait_for

pytestmark = pytest.mark.e2e
TRIAL = "NCT07212335"
RECIPIENTS = ["medical.monitor@sentinel.example", "safety.officer@sentinel.example"]


@pytest.fixture
def catcher(tmp_path: Path) -> Iterator[MailCatcher]:
    with MailCatcher(tmp_path / "mail", port=0) as mail:
        yield mail


@pytest.fixture
def stack(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, catcher: MailCatcher) -> Iterator[Stack]:
    running = Stack(tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, smtp_port=catcher.port)
    try:
        yield running
    finally:
        running.stop()


def alerts(stack: Stack) -> list[dict[str, object]]:
    response = httpx.get(stack.url("notify") + "/v1/alerts", headers={"authorization": f"Bearer {stack.token}"})
    response.raise_for_status()
    result: list[dict[str, object]] = response.json()
    return result


def settle_mails(catcher: MailCatcher, expected: int) -> None:
    """Wait for the expected mails, then give any extra (a duplicate) time to show up before counting."""
    wait_for(lambda: len(catcher.messages()) >= expected, timeout=60, what=f"{expected} mails")
    with pytest.raises(AssertionError):
        wait_for(lambda: len(catcher.messages()) > expected, timeout=3, what="an unexpected extra mail")


def test_scenario_posted_twice_gives_one_alert_and_one_mail_per_recipient(stack: Stack, catcher: MailCatcher) -> None:
    for service in ("ingest", "safety", "notify"):
        stack.start(service)
    for service in ("ingest", "safety", "notify"):
        stack.wait_ready(service)
    now = datetime.now(UTC)
    events = scenario_events(TRIAL, now)
    # The SAE and the suspected DLT (a grade 3 related infusion reaction) to both contacts; the ALT toxicity
    # (worse than a normal baseline) to the safety officer; neutrophils at their baseline grade 4: nothing.
    expected_mails = 2 * len(RECIPIENTS) + 1
    with httpx.Client() as client:
        first = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
        assert [p.status for p in first] == [202] * len(events), [p.body for p in first]
        settle_mails(catcher, expected_mails)
        again = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
        assert [p.status for p in again] == [200] * len(events)
    settle_mails(catcher, expected_mails)

    mails = catcher.messages()
    sae_mails = [m for m in mails if "SAE report due" in str(m["Subject"])]
    lab_mails = [m for m in mails if "Alanine aminotransferase increased grade 3" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in sae_mails) == RECIPIENTS
    assert [str(m["To"]) for m in lab_mails] == ["safety.officer@sentinel.example"]
    due = (now - timedelta(hours=1) + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M UTC")
    assert due in str(sae_mails[0]["Subject"])
    listed = {str(a["kind"]): a for a in alerts(stack)}
    assert set(listed) == {"sae", "lab_toxicity", "dlt"}, "neutrophils at baseline grade 4 must not page"
    dlt_mails = [m for m in mails if "Suspected DLT" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in dlt_mails) == RECIPIENTS
    obligations = listed["sae"]["obligations"]
    assert isinstance(obligations, list) and len(obligations) == 1
    assert obligations[0]["state"] == "open" and obligations[0]["clock_basis"] == "site"
    assert listed["lab_toxicity"]["obligations"] == []


def test_safety_killed_between_db_commit_and_offset_commit_loses_and_duplicates_nothing(
    stack: Stack, catcher: MailCatcher, tmp_path: Path
) -> None:
    stack.start("ingest")
    stack.start("notify")
    crashing = stack.start("safety", SENTINEL_SAFETY_FAILPOINT="crash_before_offset_commit")
    stack.wait_ready("ingest")
    stack.wait_ready("notify")
    now = datetime.now(UTC)
    sae = scenario_events(TRIAL, now)[-1]  # the serious AE version, alone on a fresh topic
    with httpx.Client() as client:
        assert post_signed(client, stack.url("ingest"), "edc", stack.secret, sae, now=now).status == 202

    assert crashing.wait(timeout=60) == -9, stack.log("safety")
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from processed_events").fetchone() == (1,)
        assert db.execute("select count(*) from outbox where sent_at is null").fetchone() == (1,)
    assert catcher.messages() == [], "the signal must not have left before the crash in this scenario"

    stack.start("safety")
    stack.wait_ready("safety")
    settle_mails(catcher, len(RECIPIENTS))
    assert len(alerts(stack)) == 1
    metrics = httpx.get(stack.url("safety") + "/metrics").text
    assert 'sentinel_safety_events_processed_total{outcome="duplicate"} 1.0' in metrics
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from outbox where sent_at is null").fetchone() == (0,)
        assert db.execute("select count(*) from safety_ae_versions").fetchone() == (1,)


def test_safety_killed_after_committing_a_whole_batch_redelivers_it_as_duplicates_only(
    stack: Stack, catcher: MailCatcher, tmp_path: Path
) -> None:
    """The whole scenario waits on the topic, safety takes it as one batch, commits it and dies before the
    offset commit: after the restart every record of the batch is a duplicate and each mail goes out once."""
    stack.start("ingest")
    stack.start("notify")
    stack.wait_ready("ingest")
    stack.wait_ready("notify")
    now = datetime.now(UTC)
    events = scenario_events(TRIAL, now)
    with httpx.Client() as client:
        posted = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
    assert [p.status for p in posted] == [202] * len(events)

    crashing = stack.start("safety", SENTINEL_SAFETY_FAILPOINT="crash_before_offset_commit")
    assert crashing.wait(timeout=60) == -9, stack.log("safety")
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from processed_events").fetchone() == (len(events),), "one batch"

    stack.start("safety")
    stack.wait_ready("safety")
    settle_mails(catcher, 2 * len(RECIPIENTS) + 1)
    metrics = httpx.get(stack.url("safety") + "/metrics").text
    assert f'sentinel_safety_events_processed_total{{outcome="duplicate"}} {float(len(events))}' in metrics
    assert {str(a["kind"]) for a in alerts(stack)} == {"sae", "lab_toxicity", "dlt"}
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from outbox where sent_at is null").fetchone() == (0,)
