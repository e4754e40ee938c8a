"""DLTs and the 3+3 cohort through the real broker, on SQLite and PostgreSQL: enrolments, infusions and AEs
in; DltSuspected, StoppingRuleFired and CohortDecision out; officer decisions signalled through the outbox."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

import shared.protocols
from services.ingest.normalise import CanonicalEvent, to_envelope
from services.safety.main import create_app
from services.safety.protocol_engine import dlt_id_for
from services.safety.settings import SafetySettings
from shared.clock import FakeClock
from shared.events import INBOUND_DATA, SIGNAL_ADAPTER, InboundHeader, message_key
from shared.lanes import routine_topic
from tests.kafka_tools import publish_sync, read_topic_sync
from tests.polling import wait_for

pytestmark = pytest.mark.integration
TRIAL = "NCT07212335"
RECEIVED = datetime(2026, 11, 6, 9, 0, tzinfo=UTC)
OFFICER = "officer-token-0123456789abcdef"


def envelope_bytes(event_id: str, kind: str, subject: str, data: dict[str, Any]) -> tuple[bytes, bytes]:
    header = InboundHeader(id=event_id, type=kind, study=TRIAL, site="101", subject=subject, data=data)  # type: ignore[arg-type]
    event = CanonicalEvent(header=header, data=INBOUND_DATA[header.type].model_validate(data))
    envelope = to_envelope("edc", event, RECEIVED)
    return message_key(TRIAL, subject), envelope.model_dump_json().encode()


def arm_a() -> list[tuple[bytes, bytes]]:
    messages = []
    for n in (1, 2, 3):
        subject = f"101-00{n}"
        messages.append(envelope_bytes(f"enr-{n}", "enrollment", subject, {"arm": "A", "enrolled_at": "2026-11-02"}))
        dose = {"dose_id": f"D-{n}", "number": 1, "administered_at": "2026-11-02T10:00:00+01:00"}
        messages.append(envelope_bytes(f"dose-{n}", "dose", subject, dose))
    return messages


def two_dlts() -> list[tuple[bytes, bytes]]:
    messages = []
    pneumonitis = {"ae_id": "AE-1", "version": 1, "term": "Pneumonitis", "grade": 3, "relatedness": "possible"}
    reaction = {"ae_id": "AE-2", "version": 1, "term": "Infusion related reaction", "grade": 3}
    messages.append(envelope_bytes("ae-1", "ae", "101-001", {**pneumonitis, "onset": "2026-11-04"}))
    second = envelope_bytes("ae-2", "ae", "101-002", {**reaction, "onset": "2026-11-02"})
    messages += [second, second]  # delivered twice: the inbox makes the second a no-op
    messages.append(envelope_bytes("ae-2-again", "ae", "101-002", {**reaction, "onset": "2026-11-02"}))  # re-sent
    return messages


def dlt_only_protocol(tmp_path: Path) -> Path:
    """The shipped protocol without the infusion-day rules and the sample schedule: these subjects have no vitals
    or immunology samples (the sweep would flag each) and AE-2 is also an acute reaction; those rules have their
    own tests
    (tests/unit/safety/test_infusion_day_events.py, tests/e2e/test_acute_reaction_window.py)."""
    document = yaml.safe_load((Path(shared.protocols.__file__).parent / "nct07212335.yaml").read_text())
    for section in ("infusion_vitals", "acute_reactions", "samples"):
        document.pop(section)
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def signal_types(records: list[Any]) -> Counter[str]:
    return Counter(SIGNAL_ADAPTER.validate_json(r.value).type for r in records)


def test_dlts_stopping_rule_and_cohort_decisions_through_the_broker(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    clinical, signals = f"{topic_prefix}.clinical", f"{topic_prefix}.signals"
    publish_sync(kafka_bootstrap, clinical, arm_a())
    settings = SafetySettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        clinical_topic=clinical,
        signals_topic=signals,
        database_url=database_url,
        var_dir=tmp_path,
        protocol_path=dlt_only_protocol(tmp_path),
        safety_group_id=f"safety-{uuid.uuid4().hex[:8]}",
        safety_sweep_seconds=0.5,
        api_tokens={OFFICER: {"user": "olga", "role": "officer"}},
    )
    app = create_app(settings, clock=FakeClock(RECEIVED), registry=CollectorRegistry())
    with TestClient(app) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, what="safety ready")

        # arm A evaluating, and each of the three subjects dosed with no screening data on record (issue 13)
        def both_lanes(case: int, routine: int) -> list[Any]:
            """The case and decision signals, then the routine ones: none here (the screening deviations page, so they
            take the signals topic: shared.lanes)."""
            return [
                *read_topic_sync(kafka_bootstrap, signals, expect=case, timeout=30),
                *read_topic_sync(kafka_bootstrap, routine_topic(signals), expect=routine, timeout=30),
            ]

        initial = both_lanes(4, 0)
        assert signal_types(initial) == {"cohort.decision": 1, "protocol.deviation": 3}
        publish_sync(kafka_bootstrap, clinical, two_dlts())

        def decisions(records: list[Any]) -> list[str]:
            parsed = [SIGNAL_ADAPTER.validate_json(r.value) for r in records]
            return [s.data.decision for s in parsed if s.type == "cohort.decision"]  # type: ignore[union-attr]

        # The two DLTs in one consumer batch take the arm from evaluating to hold at once; in two, through
        # 'awaiting_dlt_review' (a batch shows no transient: README). Read until the arm's last decision is in.
        for expect in (8, 9):
            first = both_lanes(expect, 0)
            if decisions(first)[-1:] == ["hold"]:
                break
        assert decisions(first) in (["evaluating", "hold"], ["evaluating", "awaiting_dlt_review", "hold"]), (
            "never escalate on open suspicions"
        )
        assert signal_types(first) == {
            "dlt.suspected": 2,
            "stopping_rule.fired": 1,
            "cohort.decision": len(decisions(first)),
            "protocol.deviation": 3,
        }, "the sweep and the re-delivery add nothing"
        parsed = [SIGNAL_ADAPTER.validate_json(r.value) for r in first]
        [decision, *_] = [s for s in parsed if s.type == "cohort.decision"]
        assert (decision.data.arm, decision.data.enrolled) == ("A", 3)  # type: ignore[union-attr]
        [fired] = [s for s in parsed if s.type == "stopping_rule.fired"]
        assert fired.data.dlt_suspected == 2 and fired.data.dlt_confirmed == 0  # type: ignore[union-attr]
        suspected = {s.data.subject_id: s for s in parsed if s.type == "dlt.suspected"}  # type: ignore[union-attr]
        assert suspected["101-001"].data.window_start == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # type: ignore[union-attr]
        assert {r.key for r in first if b"arm:" not in (r.key or b"")} == {
            b"NCT07212335:101-001",
            b"NCT07212335:101-002",
            b"NCT07212335:101-003",  # its screening deviation
        }

        for subject, ae_id in (("101-001", "AE-1"), ("101-002", "AE-2")):
            response = client.post(
                f"/v1/dlts/{dlt_id_for(TRIAL, subject, ae_id)}/confirm",
                json={"reason": "reviewed"},
                headers={"authorization": f"Bearer {OFFICER}"},
            )
            assert response.status_code == 200, response.text
        everything = both_lanes(len(first) + 4, 0)

    seen = {s.id for s in parsed}  # partitions interleave differently on each read: compare by id, not position
    later = [s for s in (SIGNAL_ADAPTER.validate_json(r.value) for r in everything) if s.id not in seen]
    assert Counter(s.type for s in later) == {"dlt.decided": 2, "cohort.decision": 1, "dose.recommended": 1}
    # the first confirmation leaves the arm on hold (the second is still under review); the second stops it
    assert [s.data.decision for s in later if s.type == "cohort.decision"] == ["stop"]  # type: ignore[union-attr]
    [final] = [s for s in later if s.type == "dose.recommended"]
    assert (final.data.recommended_arm, final.data.basis) == (None, "no_tolerated_dose")  # type: ignore[union-attr]
    assert len(everything) == len(first) + 4
