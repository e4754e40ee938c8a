"""Safety against the real broker, on SQLite and PostgreSQL: SAE signals out, poison to the DLQ, replays inert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.ingest.normalise import CanonicalEvent, to_envelope
from services.safety.main import create_app
from services.safety.models import AeVersion
from services.safety.settings import SafetySettings
from shared.db import make_engine
from shared.events import INBOUND_DATA, DataQualityFlagged, InboundHeader, LabToxicity, SaeDetected, message_key
from shared.inbox import ProcessedEvent
from shared.lanes import bulk_topic, routine_topic
from shared.outbox import OutboxMessage
from shared.topics import dead_letter_topic
from tests.kafka_tools import publish_sync, read_topic_sync
from tests.polling import wait_for

pytestmark = pytest.mark.integration
RECEIVED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def envelope_bytes(
    event_id: str, kind: str, data: dict[str, Any], *, trial: str = "NCT07212335", subject: str = "101-002"
) -> tuple[bytes, bytes]:
    header = InboundHeader(id=event_id, type=kind, study=trial, site="101", subject=subject, data=data)  # type: ignore[arg-type]
    event = CanonicalEvent(header=header, data=INBOUND_DATA[header.type].model_validate(data))
    envelope = to_envelope("edc", event, RECEIVED)
    return message_key(trial, subject), envelope.model_dump_json().encode()


def safety_settings(
    kafka_bootstrap: str, clinical: str, signals: str, database_url: str, tmp_path: Path
) -> SafetySettings:
    return SafetySettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        clinical_topic=clinical,
        signals_topic=signals,
        database_url=database_url,
        var_dir=tmp_path,
        safety_group_id=f"safety-{uuid.uuid4().hex[:8]}",
    )


def test_sae_signal_once_poison_dead_lettered(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    clinical, signals = f"{topic_prefix}.clinical", f"{topic_prefix}.signals"
    ae = {"ae_id": "AE-2", "term": "Sepsis", "grade": 4, "relatedness": "unlikely"}
    serious_v2 = envelope_bytes(
        "e3",
        "ae",
        {
            **ae,
            "version": 2,
            "seriousness": {"life_threatening": True},
            "awareness_at": (RECEIVED - timedelta(hours=3)).isoformat(),
        },
    )
    messages = [
        envelope_bytes("e1", "enrollment", {"arm": "A", "enrolled_at": "2026-11-01"}),
        envelope_bytes("e2", "ae", {**ae, "version": 1, "serious": False}),
        serious_v2,
        serious_v2,  # the broker delivered it twice (producer retry): the inbox makes it a no-op
        envelope_bytes(
            "e4", "ae", {**ae, "version": 2, "seriousness": {"life_threatening": True}}
        ),  # same version, new id, without the awareness time: not applied again; the site is told
        (b"k", b"{not json"),
        envelope_bytes("e5", "enrollment", {"arm": "A", "enrolled_at": "2026-11-01"}, trial="NCT00000000"),
    ]
    publish_sync(kafka_bootstrap, clinical, messages)

    settings = safety_settings(kafka_bootstrap, clinical, signals, database_url, tmp_path)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, what="safety ready")
        out = [  # the SAE on the signals topic, the site's flag on its routine lane (shared.lanes)
            *read_topic_sync(kafka_bootstrap, signals, expect=1, timeout=30),
            *read_topic_sync(kafka_bootstrap, routine_topic(signals), expect=1, timeout=30),
        ]
        dead = read_topic_sync(kafka_bootstrap, dead_letter_topic(clinical), expect=2, timeout=30)
        metrics = client.get("/metrics").text

    assert len(out) == 2, "one SAE signal, and one flag for the conflicting re-send"
    flagged = DataQualityFlagged.model_validate_json(out[1].value)
    assert flagged.data.code == "conflicting_resend" and "awareness_at" in flagged.data.detail
    signal = SaeDetected.model_validate_json(out[0].value)
    assert signal.data.criteria == ["life_threatening"]
    assert signal.data.awareness_at == RECEIVED - timedelta(hours=3)
    assert signal.data.awareness_basis.value == "site"
    assert out[0].key == b"NCT07212335:101-002"

    assert len(dead) == 2
    errors = [r.headers["error"].decode() for r in dead]
    assert any("invalid envelope" in e for e in errors)
    assert any("NCT00000000" in e for e in errors)
    assert {r.headers["source_topic"] for r in dead} == {clinical.encode()}
    assert b"{not json" in [r.value for r in dead]
    assert "sentinel_safety_dead_letters_total 2.0" in metrics
    assert 'sentinel_safety_events_processed_total{outcome="duplicate"} 1.0' in metrics

    engine = make_engine(database_url)
    with Session(engine) as session:
        versions = session.exec(select(AeVersion).where(AeVersion.ae_id == "AE-2")).all()
        assert sorted(v.version for v in versions) == [1, 2]
        assert len(session.exec(select(ProcessedEvent)).all()) == 4  # poison rolled back
        outbox = session.exec(select(OutboxMessage)).all()
        assert len(outbox) == 2 and all(row.sent_at is not None for row in outbox)
    engine.dispose()


def test_an_sae_overtakes_a_backfill_waiting_on_the_bulk_lane(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A backfill is being consumed (and buffered by the consumer) when an SAE arrives: it goes next, not after
    the records already fetched from the bulk lane."""
    clinical, signals = f"{topic_prefix}.clinical", f"{topic_prefix}.signals"
    backfill = 1200
    lab = {"test": "PLAT", "value": "200", "unit": "10^9/L", "lln": "150", "uln": "400"}
    labs = [
        envelope_bytes(
            f"lab-{n}",
            "lab",
            {**lab, "result_id": f"R{n}", "collected_at": (RECEIVED - timedelta(hours=n)).isoformat()},
        )
        for n in range(backfill)
    ]
    publish_sync(kafka_bootstrap, bulk_topic(clinical), labs)
    database_url = f"sqlite:///{tmp_path / 'safety.db'}"
    settings = safety_settings(kafka_bootstrap, clinical, signals, database_url, tmp_path)
    engine = make_engine(database_url)

    def processed() -> list[ProcessedEvent]:
        with Session(engine) as session:
            return list(session.exec(select(ProcessedEvent)).all())

    with TestClient(create_app(settings, registry=CollectorRegistry())):
        wait_for(lambda: len(processed()) > 0, timeout=60, what="the backfill being consumed")
        sae = {"ae_id": "AE-9", "version": 1, "term": "Sepsis", "grade": 4, "seriousness": {"life_threatening": True}}
        published = datetime.now(UTC)
        publish_sync(kafka_bootstrap, clinical, [envelope_bytes("sae", "ae", sae)])
        wait_for(lambda: len(processed()) == backfill + 1, timeout=300, what="backfill and SAE processed")
    rows = processed()
    engine.dispose()
    [handled] = [row for row in rows if row.topic == clinical]
    overtaken = [row for row in rows if row.topic != clinical and published < row.processed_at <= handled.processed_at]
    assert len(overtaken) <= 300, f"{len(overtaken)} backfilled labs were handled between the SAE's arrival and it"
    assert len(read_topic_sync(kafka_bootstrap, signals, expect=1)) == 1


def test_a_lab_toxicity_takes_the_lane_of_the_result_that_raised_it(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """A grade 4 count entered on its own pages on the signals topic; a backfill's goes to the routine lane, where
    it cannot hold back what a site has just entered (shared.lanes)."""
    clinical, signals = f"{topic_prefix}.clinical", f"{topic_prefix}.signals"
    lab = {"test": "PLAT", "unit": "10^9/L", "lln": "150", "uln": "400", "collected_at": RECEIVED.isoformat()}
    backfilled = envelope_bytes("bf-1", "lab", {**lab, "result_id": "R-1", "value": "40"}, subject="101-002")
    entered = envelope_bytes("live-1", "lab", {**lab, "result_id": "R-2", "value": "12"}, subject="101-003")
    publish_sync(kafka_bootstrap, bulk_topic(clinical), [backfilled])
    publish_sync(kafka_bootstrap, clinical, [entered])
    settings = safety_settings(kafka_bootstrap, clinical, signals, database_url, tmp_path)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, what="safety ready")
        [urgent] = read_topic_sync(kafka_bootstrap, signals, expect=1, timeout=30)
        [routine] = read_topic_sync(kafka_bootstrap, routine_topic(signals), expect=1, timeout=30)
    live, late = LabToxicity.model_validate_json(urgent.value), LabToxicity.model_validate_json(routine.value)
    assert (live.data.subject_id, live.data.grade) == ("101-003", 4)
    assert (late.data.subject_id, late.data.grade) == ("101-002", 3)
