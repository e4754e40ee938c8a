"""A backfill's routine signals never hold back an SAE page (shared.lanes): on real Kafka, with 300 lab
toxicities waiting on the routine lane before notify starts and the SAE published after them, notify opens the
SAE's alert after at most one routine batch (50 here; a first poll may find only the routine lane fetched), not
after all 300 as on one topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session, col, select

from services.devstack.mail_catcher import MailCatcher
from services.notify import urgency
from services.notify.main import create_app
from services.notify.models import Alert, Delivery
from services.notify.settings import NotifySettings
from shared.db import make_engine
from shared.events import message_key
from shared.lanes import routine_topic
from tests.kafka_tools import publish_sync
from tests.polling import wait_for
from tests.signal_factories import grade4_platelets, sae_detected

pytestmark = pytest.mark.integration
AT = datetime(2026, 11, 25, 22, 15, tzinfo=UTC)
BACKLOG = 300
ROUTINE_BATCH = 50


def notify_settings(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, smtp_port: int, routine_batch: int | None = None
) -> NotifySettings:
    return NotifySettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        signals_topic=f"{topic_prefix}.signals",
        clinical_topic=f"{topic_prefix}.clinical",
        var_dir=tmp_path,
        notify_group_id=f"notify-{uuid.uuid4().hex[:8]}",
        smtp_port=smtp_port,
        **({"consumer_bulk_batch": routine_batch} if routine_batch is not None else {}),
    )


def test_an_sae_is_handled_before_a_backlog_of_routine_signals(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    signals = f"{topic_prefix}.signals"
    labs = [grade4_platelets(n, at=AT) for n in range(BACKLOG)]
    publish_sync(
        kafka_bootstrap,
        routine_topic(signals),
        [(message_key(s.trialid, s.subject), s.model_dump_json().encode()) for s in labs],
    )
    sae = sae_detected("101-003", aware=AT, ae_id="AE-7", onset="2026-11-25", received_at=AT)
    publish_sync(kafka_bootstrap, signals, [(message_key("NCT07212335", "101-003"), sae.model_dump_json().encode())])
    with MailCatcher(tmp_path / "mail", port=0) as catcher:
        settings = notify_settings(kafka_bootstrap, topic_prefix, tmp_path, catcher.port, ROUTINE_BATCH)
        engine = make_engine(settings.database_url_for("notify"))
        with TestClient(create_app(settings, registry=CollectorRegistry())):

            def alerts() -> list[Alert]:
                with Session(engine) as session:
                    return list(session.exec(select(Alert).order_by(col(Alert.created_at), col(Alert.id))))

            everything = wait_for(lambda: len(found := alerts()) == BACKLOG + 1 and found, what="every alert")
    [sae_alert] = [a for a in everything if a.kind == "sae"]
    before = [a for a in everything if a.created_at < sae_alert.created_at]
    assert len(before) <= ROUTINE_BATCH, f"{len(before)} routine alerts went before the SAE"
    assert [a.kind for a in everything].count("lab_toxicity") == BACKLOG


def test_a_lab_toxicity_on_the_signals_topic_pages_ahead_of_a_backfills(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A lab toxicity safety put on the signals topic (raised by a result a site entered on its own) is queued as a
    LIVE_FINDING; those of a backfill, on the routine lane, are PAGEs (services.notify.urgency)."""
    signals = f"{topic_prefix}.signals"
    backfilled, entered = grade4_platelets(1, at=AT), grade4_platelets(2, at=AT)
    publish_sync(
        kafka_bootstrap,
        routine_topic(signals),
        [(message_key(backfilled.trialid, backfilled.subject), backfilled.model_dump_json().encode())],
    )
    publish_sync(
        kafka_bootstrap, signals, [(message_key(entered.trialid, entered.subject), entered.model_dump_json().encode())]
    )
    with MailCatcher(tmp_path / "mail", port=0) as catcher:
        settings = notify_settings(kafka_bootstrap, topic_prefix, tmp_path, catcher.port)
        engine = make_engine(settings.database_url_for("notify"))
        with TestClient(create_app(settings, registry=CollectorRegistry())):

            def urgency_by_subject() -> dict[str, int]:
                with Session(engine) as session:
                    rows = session.exec(select(Alert.subject_id, Delivery.urgency).join(Delivery)).all()
                    return {subject: level for subject, level in rows}

            found = wait_for(lambda: len(got := urgency_by_subject()) == 2 and got, what="both lab alerts' pages")
    assert found == {backfilled.data.subject_id: urgency.PAGE, entered.data.subject_id: urgency.LIVE_FINDING}
