"""Every mail links to its alert's page in the console (SENTINEL_CONSOLE_URL), the first page and the timed ones
alike; without the setting the mails are as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session, select

from services.notify import models
from services.notify.mail_content import console_link, with_console_link
from services.notify.metrics import TimerMetrics
from services.notify.models import Alert, Delivery
from services.notify.signals import apply_signal
from services.notify.timers import TimerRunner
from shared.clock import FakeClock
from shared.db import create_tables
from shared.protocol import Protocol
from tests.signal_factories import sae_detected

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CONSOLE = "https://sentinel.example.org/"


def deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(Delivery).order_by(Delivery.created_at)).all())


def test_the_link_is_added_once_to_text_and_html() -> None:
    link = console_link(CONSOLE, "alert-1")
    assert link == "https://sentinel.example.org/console/alerts/alert-1"
    text, html = with_console_link(text="SAE.", html="<html><body><p>SAE.</p></body></html>", link=link)
    assert text.endswith(f"Open this alert in the console: {link}\n")
    assert html.endswith(f'<a href="{link}">Open this alert in the console</a> ({link})</p></body></html>')
    assert with_console_link(text=text, html=html, link=link) == (text, html)


def test_first_page_and_reminders_link_to_the_alert(engine: Engine, protocol: Protocol) -> None:
    create_tables(engine, models.TABLES)
    with Session(engine) as session, session.begin():
        apply_signal(session, sae_detected("S-1", aware=NOW), NOW, protocol=protocol, console_url=CONSOLE)
    with Session(engine) as session:
        [alert] = session.exec(select(Alert)).all()
    first = deliveries(engine)
    assert first and all(console_link(CONSOLE, alert.id) in d.body_text for d in first)
    assert all(f'href="{console_link(CONSOLE, alert.id)}"' in d.body_html for d in first)

    clock = FakeClock(NOW)
    runner = TimerRunner(
        engine=engine,
        protocol=protocol,
        clock=clock,
        metrics=TimerMetrics.create(CollectorRegistry()),
        console_url=CONSOLE,
    )
    assert runner.fire_due(NOW + timedelta(hours=12, minutes=1)) > 0  # escalation steps and the 12 h reminder
    later = [d for d in deliveries(engine) if d.id not in {f.id for f in first}]
    assert later and all(d.body_text.count(console_link(CONSOLE, alert.id)) == 1 for d in later)


def test_without_a_console_url_mails_carry_no_link(engine: Engine, protocol: Protocol) -> None:
    create_tables(engine, models.TABLES)
    with Session(engine) as session, session.begin():
        apply_signal(session, sae_detected("S-1", aware=NOW), NOW, protocol=protocol)
    assert all("/console/alerts/" not in d.body_text for d in deliveries(engine))
