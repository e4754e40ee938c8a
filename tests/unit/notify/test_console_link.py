"""Every mail links to its alert's page in the console (SENTINEL_CONSOLE_URL), the first page and the timed ones
alike; without the setting the mails are as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, event
from sqlmodel import Session, select

from services.notify import models
from services.notify.mail_content import console_link, with_console_link
from services.notify.metrics import TimerMetrics
from services.notify.models import Alert, Delivery
from services.notify.signal_batch import open_batch
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


def test_a_transaction_of_signals_links_every_mail_reading_each_once(engine: Engine, protocol: Protocol) -> None:
    """The consumer's rule (signal_batch): 30 SAEs in one transaction; every mail links to its own alert, and the
    mails are read for linking once at the end, not once per signal (which read about n^2/2 of them)."""
    create_tables(engine, models.TABLES)
    read: list[int] = []

    def count_reads(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM notify_deliveries" in statement and "notify_deliveries.created_at =" in statement:
            read.append(1)  # the linking query: the mails queued at the transaction's instant

    event.listen(engine, "before_cursor_execute", count_reads)
    with Session(engine) as session, session.begin():
        batch = open_batch(protocol, CONSOLE)(session, NOW, [])
        for n in range(30):
            batch.apply(sae_detected(f"S-{n:02d}", aware=NOW))
        assert read == [], "nothing linked per signal"
        batch.finish()
    event.remove(engine, "before_cursor_execute", count_reads)
    with Session(engine) as session:
        alerts = {a.id for a in session.exec(select(Alert)).all()}
    mails = deliveries(engine)
    assert len(alerts) == 30 and len(mails) >= 60
    assert all(console_link(CONSOLE, d.alert_id) in d.body_text for d in mails)
    assert len(read) == 1
