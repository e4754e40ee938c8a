"""End to end on one fake clock: signed webhook -> ingest -> Kafka -> safety -> Kafka -> notify -> SMTP.

The three services run in this process (their real apps, lifespans, consumers, outbox relays, timers and
dispatcher, on the real broker and a real SMTP catcher), all on one FakeClock, so the SUSAR clocks can be
checked to the second and days can pass without waiting for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import new_webhook_secret, post_signed
from services.ingest.main import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.notify.main import create_app as notify_app
from services.notify.settings import NotifySettings
from services.notify.susar_alerts import recipient_of
from services.safety.main import create_app as safety_app
from services.safety.settings import SafetySettings
from shared.clock import FakeClock
from tests.polling import wait_for

pytestmark = pytest.mark.e2e
TRIAL = "NCT07212335"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
OFFICER = "e2e-officer-0123456789abcdef"
AUTH = {"authorization": f"Bearer {OFFICER}"}
RECIPIENTS = {"regulator", "ethics-committee", "investigators"}


@dataclass
class System:
    clock: FakeClock
    ingest: TestClient
    safety: TestClient
    notify: TestClient
    catcher: MailCatcher
    secret: str

    def post(self, event_id: str, kind: str, subject: str, data: dict[str, Any]) -> None:
        event = {"id": event_id, "type": kind, "study": TRIAL, "site": "101", "subject": subject, "data": data}
        posted = post_signed(self.ingest, "", "edc", self.secret, event, now=self.clock.now())
        assert posted.status == 202, posted.body

    def obligations(self, subject: str) -> list[dict[str, Any]]:
        response = self.notify.get("/v1/obligations", params={"subject": subject, "limit": 1000}, headers=AUTH)
        response.raise_for_status()
        return [o for o in response.json() if str(o["kind"]).startswith("susar_")]

    def wait_obligations(self, subject: str, count: int) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]]:
            found = self.obligations(subject)
            return found if len(found) >= count else []

        return wait_for(enough, timeout=60, interval=0.2, what=f"{count} SUSAR obligations for {subject}")

    def report_dues(self, subject: str) -> set[datetime]:
        return {datetime.fromisoformat(o["due_at"]) for o in self.obligations(subject) if o["kind"] == "susar_report"}

    def case(self, subject: str) -> httpx.Response:
        return self.safety.get(f"/v1/trials/{TRIAL}/subjects/{subject}/aes/AE-1/expedited", headers=AUTH)

    def move_to(self, moment: datetime) -> None:
        self.clock.set(moment)
        self.notify.app.state.timers.wake()  # type: ignore[attr-defined]


@pytest.fixture
def system(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Iterator[System]:
    clock = FakeClock(T0)
    secret = new_webhook_secret()
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "clinical_topic": f"{topic_prefix}.clinical",
        "signals_topic": f"{topic_prefix}.signals",
        "var_dir": tmp_path / "var",
    }
    tokens = {OFFICER: {"user": "dr.e2e", "role": "officer"}}
    with ExitStack() as stack:
        catcher = stack.enter_context(MailCatcher(tmp_path / "mail", port=0))
        apps = (
            ingest_app(
                IngestSettings(**common, webhook_secrets={"edc": secret}, background_jobs=False),
                clock=clock,
                registry=CollectorRegistry(),
            ),
            safety_app(
                SafetySettings(**common, safety_group_id=f"{topic_prefix}-safety", api_tokens=tokens),
                clock=clock,
                registry=CollectorRegistry(),
            ),
            notify_app(
                NotifySettings(
                    **common,
                    notify_group_id=f"{topic_prefix}-notify",
                    api_tokens=tokens,
                    smtp_port=catcher.port,
                    timer_poll_seconds=0.2,
                    dispatch_poll_seconds=0.2,
                ),
                clock=clock,
                registry=CollectorRegistry(),
            ),
        )
        ingest, safety, notify = (stack.enter_context(TestClient(app)) for app in apps)
        for client in (ingest, safety, notify):
            wait_for(lambda c=client: c.get("/readyz").status_code == 200, timeout=60, what="ready")  # type: ignore[misc]
        yield System(clock, ingest, safety, notify, catcher, secret)


def enrol_and_infuse(system: System, subject: str) -> None:
    system.post(f"{subject}-enrol", "enrollment", subject, {"arm": "A", "enrolled_at": "2026-10-30"})
    dose = {"dose_id": f"{subject}-D1", "number": 1, "administered_at": "2026-10-31T10:00:00+00:00"}
    system.post(f"{subject}-dose", "dose", subject, {**dose, "cells_per_kg": 2000000})


def ae(ae_id: str, version: int, term: str, grade: int, **extra: Any) -> dict[str, Any]:
    return {"ae_id": ae_id, "version": version, "term": term, "grade": grade, "onset": "2026-11-01", **extra}


def test_susar_clocks_through_the_webhook(system: System) -> None:
    fatal, upgraded, expected, minor = (f"{n}-{uuid.uuid4().hex[:6]}" for n in ("901", "902", "903", "904"))
    for subject in (fatal, upgraded, expected, minor):
        enrol_and_infuse(system, subject)

    # A fatal related unexpected AE: per recipient, a 7-day report and a 15-day completion from our receipt.
    received = system.clock.now()
    system.post(
        f"{fatal}-ae",
        "ae",
        fatal,
        ae("AE-1", 1, "Pneumonitis", 5, relatedness="probable", seriousness={"death": True}, outcome="fatal"),
    )
    found = system.wait_obligations(fatal, 6)
    reports = [o for o in found if o["kind"] == "susar_report"]
    completions = [o for o in found if o["kind"] == "susar_completion"]
    assert {recipient_of(o["description"]) for o in reports} == RECIPIENTS
    assert {datetime.fromisoformat(o["due_at"]) for o in reports} == {received + timedelta(days=7)}
    assert {datetime.fromisoformat(o["due_at"]) for o in completions} == {received + timedelta(days=15)}

    # Expected per the RSI (infusion reaction up to grade 2), and non-serious: no SUSAR obligation.
    system.post(
        f"{expected}-ae",
        "ae",
        expected,
        ae("AE-1", 1, "Infusion related reaction", 2, relatedness="definite", seriousness={"hospitalization": True}),
    )
    system.post(f"{minor}-ae", "ae", minor, ae("AE-1", 1, "Pneumonitis", 2, relatedness="definite", serious=False))

    # A non-fatal SUSAR (15 days), made fatal by a follow-up three days later: 7 days from that news.
    system.post(
        f"{upgraded}-v1",
        "ae",
        upgraded,
        ae("AE-1", 1, "Pneumonitis", 3, relatedness="possible", seriousness={"hospitalization": True}),
    )
    [first] = {o["due_at"] for o in system.wait_obligations(upgraded, 3)}
    assert datetime.fromisoformat(first) == received + timedelta(days=15)
    news = received + timedelta(days=3)
    system.move_to(news)
    system.post(
        f"{upgraded}-v2",
        "ae",
        upgraded,
        ae("AE-1", 2, "Pneumonitis", 5, relatedness="possible", seriousness={"hospitalization": True, "death": True}),
    )
    wait_for(
        lambda: system.report_dues(upgraded) == {news + timedelta(days=7)},
        timeout=60,
        interval=0.2,
        what="the upgrade to move the report to 7 days from the news",
    )
    assert len([o for o in system.obligations(upgraded) if o["kind"] == "susar_completion"]) == 3
    # Safety judged them (the SAE's file says expected; the non-serious AE has none), and notify raised the
    # expected one's SAE alert (its 24 h clock) but no SUSAR obligation.
    case = wait_for(
        lambda: system.case(expected) if system.case(expected).status_code == 200 else None,
        timeout=60,
        what="the expected SAE's file",
    )
    assert case is not None and (case.json()["expectedness"], case.json()["susar"]) == ("expected", False)
    wait_for(
        lambda: system.notify.get("/v1/alerts", params={"subject": expected}, headers=AUTH).json(),
        timeout=60,
        what="the expected SAE's alert",
    )
    assert system.obligations(expected) == []
    subject_view = wait_for(
        lambda: system.safety.get(f"/v1/trials/{TRIAL}/subjects/{minor}", headers=AUTH).json()["adverse_events"],
        timeout=60,
        what="the non-serious AE stored",
    )
    assert subject_view[0]["serious"] is False
    assert system.case(minor).status_code == 404 and system.obligations(minor) == []

    # Reminders run on the same clock: 12 h before the fatal case's day-7 deadline, the officers hear of it.
    system.move_to(received + timedelta(days=7) - timedelta(hours=11))
    wait_for(
        lambda: any("Reminder: SUSAR report" in str(m["Subject"]) for m in system.catcher.messages()),
        timeout=60,
        what="a SUSAR reminder mail",
    )

    # Each recipient's report closes with its own submission reference.
    for n, obligation in enumerate(reports):
        done = system.notify.post(
            f"/v1/obligations/{obligation['id']}/complete", json={"reference": f"EV-{n}"}, headers=AUTH
        )
        assert done.status_code == 200 and done.json()["state"] == "completed", done.text
    states = {o["id"]: (o["state"], o["reference"]) for o in system.obligations(fatal)}
    assert {states[o["id"]] for o in reports} == {("completed", f"EV-{n}") for n in range(3)}
    assert {states[o["id"]][0] for o in completions} == {"open"}  # the day-15 completion is still due

    # The officer API of safety serves the drafts of the fatal case.
    base = f"/v1/trials/{TRIAL}/subjects/{fatal}/aes/AE-1"
    pdf = system.safety.get(f"{base}/reports/cioms.pdf", headers=AUTH)
    xml = system.safety.get(f"{base}/reports/e2b.xml", headers=AUTH)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert xml.status_code == 200 and b"PORR_IN049016UV" in xml.content
