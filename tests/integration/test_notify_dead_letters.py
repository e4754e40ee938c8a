"""Issue 15, defect 1 on real parts: a message a consumer dead-letters pages its owner by mail.

A poison signal is dead-lettered by notify's own consumer (the real `_dead_letter` headers), and a record in
the clinical DLQ (as safety writes it) is read from the shared broker: each becomes one alert and one
page over real SMTP, and a re-published dead letter pages nobody again."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.devstack.mail_catcher import MailCatcher
from services.notify.main import create_app
from services.notify.settings import NotifySettings
from tests.kafka_tools import publish_sync
from tests.polling import wait_for

pytestmark = pytest.mark.integration
TOKEN = "officer-token-" + uuid.uuid4().hex
OFFICER = "safety.officer@sentinel.example"
DATA_MANAGER = "data.manager@sentinel.example"


async def publish_with_headers(bootstrap: str, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=b"NCT07212335:101-004", headers=headers)
    finally:
        await producer.stop()


def test_dead_letters_page_their_owner_once(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    clinical, signals = f"{topic_prefix}.clinical", f"{topic_prefix}.signals"
    lab = {
        "id": "evt-lab-9",
        "type": "lab.resulted",
        "trialid": "NCT07212335",
        "data": {"site_id": "101", "subject_id": "101-004", "uln": "1e999999"},
    }
    headers = [
        ("error", b"Traceback (most recent call last):\ndecimal.Overflow: [<class 'decimal.Overflow'>]"),
        ("error_type", b"Overflow"),
        ("source_topic", clinical.encode()),
        ("source_partition", b"0"),
        ("source_offset", b"17"),
        ("consumer", b"safety"),
    ]
    with MailCatcher(tmp_path / "mail", port=0) as catcher:
        settings = NotifySettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            signals_topic=signals,
            clinical_topic=clinical,
            var_dir=tmp_path,
            notify_group_id=f"notify-{uuid.uuid4().hex[:8]}",
            smtp_port=catcher.port,
            api_tokens={TOKEN: {"user": "dr.officer", "role": "officer"}},
        )
        with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, what="notify ready (both consumers)")
            publish_sync(kafka_bootstrap, signals, [(b"NCT07212335:101-005", b'{"not": "an envelope"}')])
            for _ in range(2):  # the same dead letter twice: one alert, one page
                asyncio.run(publish_with_headers(kafka_bootstrap, f"{clinical}.dlq", json.dumps(lab).encode(), headers))
            # a backfill's record, dead-lettered from the bulk lane to that lane's own DLQ
            bulk = [(k, f"{clinical}.bulk".encode() if k == "source_topic" else v) for k, v in headers]
            backfilled = json.dumps({**lab, "id": "evt-lab-10"}).encode()
            asyncio.run(publish_with_headers(kafka_bootstrap, f"{clinical}.bulk.dlq", backfilled, bulk))
            auth = {"authorization": f"Bearer {TOKEN}"}
            alerts = wait_for(
                lambda: (found := client.get("/v1/alerts", headers=auth).json()) and len(found) >= 3 and found,
                what="an alert per dead letter",
            )
            # each could be an AE: to the owner (the site data manager) and the safety officer
            mails = wait_for(lambda: len(catcher.messages()) >= 6 and catcher.messages(), what="six pages")
            wait_for(
                lambda: (
                    'sentinel_notify_dead_letter_alerts_total{outcome="duplicate"} 1.0' in client.get("/metrics").text
                ),
                what="the repeated dead letter seen as a duplicate",
            )
    assert sorted(a["kind"] for a in alerts) == ["dead_letter"] * 3
    assert len(catcher.messages()) == 6
    assert sorted(str(m["To"]) for m in mails) == sorted([OFFICER, DATA_MANAGER] * 3)
    subjects = sorted(str(m["Subject"]) for m in mails)
    assert all("Event not processed: an unreadable message" in s for s in subjects[:2])
    assert all("Event not processed: lab.resulted, subject 101-004" in s for s in subjects[2:])
    by_identity = {a["details"]["identity"]: a for a in alerts}
    assert f"{clinical}[0]@17" in by_identity
    assert f"{clinical}.bulk[0]@17" in by_identity, "the bulk lane's dead letter"
    assert any(identity.startswith(f"{signals}[") for identity in by_identity), "notify's own dead letter"
