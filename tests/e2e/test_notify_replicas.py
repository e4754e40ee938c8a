"""Two notify processes in one consumer group on one PostgreSQL: every SAE is alerted once and every mail
leaves once, whichever replica handles the signal, its deliveries and its timers."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.devstack.mail_catcher import MailCatcher
from shared.events import SaeDetected, message_key
from tests.e2e.stack import Stack
from tests.kafka_tools import publish_sync
from tests.polling import wait_for
from tests.signal_factories import sae_detected

pytestmark = pytest.mark.e2e
SAES = 40
RECIPIENTS = 2  # safety officer and medical monitor, from the shipped protocol


@pytest.fixture
def replicas(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, postgres_url: str
) -> Iterator[tuple[Stack, MailCatcher]]:
    with MailCatcher(tmp_path / "mail", port=0) as catcher:
        stack = Stack(tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, smtp_port=catcher.port)
        stack.env["SENTINEL_DATABASE_URL"] = postgres_url
        try:
            stack.start("notify", name="notify-1")
            stack.wait_ready("notify-1")  # migrates the shared database first
            stack.start("notify", name="notify-2")
            stack.wait_ready("notify-2")
            yield stack, catcher
        finally:
            stack.stop()


def sae(n: int, aware: datetime) -> SaeDetected:
    return sae_detected(f"201-{n:03d}", aware=aware, site_id="201", term="Pneumonia")


def test_two_replicas_alert_and_mail_each_sae_exactly_once(replicas: tuple[Stack, MailCatcher]) -> None:
    stack, catcher = replicas
    aware = datetime.now(UTC) - timedelta(minutes=5)
    signals = [sae(n, aware) for n in range(SAES)]
    publish_sync(
        stack.env["SENTINEL_KAFKA_BOOTSTRAP_SERVERS"],
        stack.env["SENTINEL_SIGNALS_TOPIC"],
        [(message_key("NCT07212335", s.subject), s.model_dump_json().encode()) for s in signals] * 2,  # re-delivered
    )
    expected = SAES * RECIPIENTS
    wait_for(lambda: len(catcher.messages()) >= expected, timeout=90, what=f"{expected} mails")
    with pytest.raises(AssertionError):
        wait_for(lambda: len(catcher.messages()) > expected, timeout=3, what="a duplicate mail")
    sent = Counter((str(m["To"]), str(m["Subject"]).strip()) for m in catcher.messages())
    assert max(sent.values()) == 1, [k for k, v in sent.items() if v > 1]
    headers = {"authorization": f"Bearer {stack.token}"}
    alerts = httpx.get(stack.url("notify-1") + "/v1/alerts", params={"limit": 1000}, headers=headers).json()
    assert len(alerts) == SAES
    outcomes = Counter[str]()
    for name in ("notify-1", "notify-2"):
        for line in httpx.get(stack.url(name) + "/metrics").text.splitlines():
            match = re.match(r'sentinel_notify_events_processed_total\{outcome="(\w+)"\} ([\d.]+)', line)
            if match:
                outcomes[match.group(1)] += int(float(match.group(2)))
    assert outcomes == {"processed": SAES, "duplicate": SAES}, "across both replicas, each signal applied once"
