"""Regression tests for defects a review found in notify (each fixed; the test shows what went wrong)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session

from services.notify import models
from services.notify.channels import DeliveryError
from services.notify.main import create_app
from services.notify.models import Alert, Delivery
from services.notify.settings import NotifySettings
from services.notify.signals import apply_signal
from shared.clock import FakeClock
from shared.db import create_tables
from shared.protocol import Protocol, load_protocol, parse_protocol
from tests.unit.conftest import START, FakeChannel
from tests.unit.notify.conftest import Notifier, act

SO = "safety.officer@sentinel.example"
MM = "medical.monitor@sentinel.example"
PI = "principal.investigator@sentinel.example"
DUE = START + timedelta(hours=24)
TICK = timedelta(microseconds=1)
OFFICER = "officer-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"


def to(sent: list[tuple[str, str]]) -> list[str]:
    return sorted(recipient for recipient, _ in sent)


class FailingFor(FakeChannel):
    """An SMTP stand-in that bounces every message to the given addresses and delivers the rest."""

    def __init__(self, *bad: str) -> None:
        super().__init__()
        self.bad = set(bad)

    async def send(self, message: EmailMessage) -> None:
        if str(message["To"]) in self.bad:
            raise DeliveryError("550 mailbox unavailable")
        self.sent.append(message)


# --- 1. a non-DeliveryError from a channel jams the whole delivery queue ---------------------------


async def test_a_line_break_in_an_ae_term_does_not_jam_every_later_mail(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae(term="Febrile neutropenia\nhospitalised overnight"))
    notifier.clock.advance(timedelta(minutes=1))
    notifier.apply(make_sae(subject_id="S-002", ae_id="AE-2", term="Sepsis", source_event_id="evt-2"))
    for minute in range(1, 40, 3):
        notifier.clock.set(START + timedelta(minutes=minute))
        with contextlib.suppress(Exception):  # today the error escapes; the run loop logs it and polls again
            await notifier.dispatcher.dispatch_due()
    sepsis = sorted(str(m["To"]) for m in notifier.channel.sent if "Sepsis" in str(m["Subject"]))
    assert sepsis == [MM, SO], "the second SAE's mails must go out"
    stuck = [d for d in notifier.deliveries() if d.status == "pending"]
    assert stuck == [], "the undeliverable mail fails visibly (and fails over) instead of staying pending forever"


# --- 2. failover stops at a tier that holds only the failed recipient ------------------------------


async def test_failed_mail_to_the_medical_monitor_is_handed_to_the_next_tier(
    engine: Engine, protocol: Protocol, clock: FakeClock, make_sae: Any
) -> None:
    create_tables(engine, models.TABLES)
    notifier = Notifier(engine=engine, protocol=protocol, clock=clock, channel=FailingFor(MM))
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")
    sent: list[tuple[str, str]] = []
    for moment in (START, START + timedelta(seconds=30), START + timedelta(minutes=2), START + timedelta(minutes=5)):
        sent += await notifier.at(moment)
    [mm] = [d for d in notifier.deliveries() if d.recipient == MM]
    assert mm.status == "failed"
    assert "failover_exhausted" not in [h.action for h in notifier.history()]
    assert [r for r, s in sent if "Could not reach" in s] == [PI], "the next tier that is not the failed contact"


# --- 3. shortening a snooze does not bring the held escalation step forward ------------------------


async def test_shortened_snooze_resumes_escalation_at_the_new_expiry(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    notifier.clock.set(START + timedelta(minutes=5))
    act(notifier, "snooze", actor="dr.so", reason="in theatre", until=START + timedelta(days=2))
    assert to(await notifier.at(START + timedelta(minutes=30))) == [], "step 2 held by the snooze"
    notifier.clock.set(START + timedelta(minutes=40))
    act(notifier, "snooze", actor="dr.so", reason="out early, page me at 09:00", until=START + timedelta(hours=1))
    assert to(await notifier.at(START + timedelta(hours=1))) == [MM], "step 2 pages when the (new) snooze ends"


# --- 4. overdue repeats climb two tiers at a time --------------------------------------------------


@pytest.fixture
def five_tier_protocol(protocol: Protocol) -> Protocol:
    data = protocol.model_dump(mode="json")
    data["contacts"] += [
        {"name": "Sponsor physician", "email": "sponsor.physician@sentinel.example", "role": "sponsor_physician"},
        {"name": "Chief medical officer", "email": "cmo@sentinel.example", "role": "cmo"},
    ]
    data["escalation"]["steps"] += [
        {"targets": ["sponsor_physician"], "wait_minutes": 120},
        {"targets": ["cmo"], "wait_minutes": 120},
    ]
    return parse_protocol(yaml.safe_dump(data))


async def test_overdue_repeats_climb_one_tier_at_a_time(
    engine: Engine, five_tier_protocol: Protocol, clock: FakeClock, make_sae: Any
) -> None:
    create_tables(engine, models.TABLES)
    notifier = Notifier(engine=engine, protocol=five_tier_protocol, clock=clock)
    notifier.apply(make_sae())
    act(notifier, "acknowledge", actor="dr.so")
    await notifier.at(DUE - timedelta(hours=1))
    assert to(await notifier.at(DUE + TICK)) == [MM, SO], "first overdue page: SAE roles + tier 2"
    assert to(await notifier.at(DUE + timedelta(minutes=60))) == [MM, PI, SO], "first repeat: tier 3 (the PI)"


# --- 5. a failover pages the next tier about an alert whose report was already filed ---------------


async def test_no_failover_page_after_the_report_was_filed(
    engine: Engine, protocol: Protocol, clock: FakeClock, make_sae: Any
) -> None:
    create_tables(engine, models.TABLES)
    notifier = Notifier(engine=engine, protocol=protocol, clock=clock, channel=FailingFor(SO))
    notifier.apply(make_sae())
    await notifier.at(START)
    notifier.clock.set(START + timedelta(seconds=5))
    act(notifier, "complete", actor="dr.mm", reference="MW-2026-001")
    assert notifier.only(Alert).state == "resolved"
    sent: list[tuple[str, str]] = []
    for moment in (START + timedelta(seconds=30), START + timedelta(minutes=2), START + timedelta(minutes=5)):
        sent += await notifier.at(moment)
    assert [d.status for d in notifier.rows(Delivery, recipient=SO)] == ["failed"]
    assert sent == [], "nothing is paged about a resolved alert"


# --- 6. out-of-range datetimes are a 500 instead of a 422 ------------------------------------------


@pytest.fixture
def api(clean_env: None, tmp_path: Path, clock: FakeClock, make_sae: Any) -> tuple[FastAPI, TestClient]:
    settings = NotifySettings(
        var_dir=tmp_path,
        api_tokens={
            OFFICER: {"user": "dr.officer", "role": "officer"},
            VIEWER: {"user": "viewer", "role": "viewer"},
        },
    )
    app = create_app(settings, clock=clock, registry=CollectorRegistry(), channel=FakeChannel())
    with Session(app.state.runtime.engine) as session, session.begin():
        apply_signal(session, make_sae(), clock.now(), protocol=load_protocol(None))
    return app, TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("moment", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:59:00-01:00"])
def test_out_of_range_datetimes_are_a_client_error(api: tuple[FastAPI, TestClient], moment: str) -> None:
    _app, client = api
    [alert] = client.get("/v1/alerts", headers={"Authorization": f"Bearer {VIEWER}"}).json()
    snooze = client.post(
        f"/v1/alerts/{alert['id']}/snooze",
        headers={"Authorization": f"Bearer {OFFICER}"},
        json={"reason": "x", "until": moment},
    )
    listed = client.get("/v1/obligations", headers={"Authorization": f"Bearer {VIEWER}"}, params={"due_before": moment})
    alerts = client.get("/v1/alerts", headers={"Authorization": f"Bearer {VIEWER}"}, params={"due_before": moment})
    assert [snooze.status_code, listed.status_code, alerts.status_code] == [422, 422, 422]


def test_a_decision_notify_never_saw_suspected_leaves_no_open_alert(notifier: Notifier, protocol: Any) -> None:
    from sqlmodel import Session, select

    from services.notify.models import Alert
    from services.notify.signals import apply_signal
    from shared.events import DltDecided, DltDecisionData

    db = notifier.engine
    decided = DltDecided(
        id="sig-decided",
        source="/services/safety",
        subject="S-9",
        time=START,
        trialid="NCT07212335",
        data=DltDecisionData(
            dlt_id="dlt-9",
            subject_id="S-9",
            arm="A",
            decision="rejected",
            decided_by="dr.so",
            reason="unrelated",
            decided_at=START,
        ),
    )
    with Session(db) as session, session.begin():
        apply_signal(session, decided, START, protocol=protocol)
    with Session(db) as session:
        assert [a.state for a in session.exec(select(Alert)).all()] == ["resolved"]
