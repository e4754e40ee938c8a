"""An SAE whose AE the site takes back, through safety and notify on one database with a fake clock.

What the safety officer must see: after the site's retraction no reminder, escalation or overdue page for the
SAE; one notice to whoever was paged ("withdrawn, no report needed", or, when the report was filed, that a
nullification may be needed); the obligation cancelled (not deleted) with why in the alert's history; on restore
the report owed again by its original deadline (overdue at once if past), with its timers. Officers' own decisions
stand; a redelivery changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from services.notify import models as notify_models
from services.notify.models import Alert, Delivery, Obligation, Timer
from services.notify.sae_retraction import (
    HeldObligation,
    SentMessage,
    paged_recipients,
    plan_withdrawal,
    restore_fate,
    restored_deadline,
    stands_withdrawn,
)
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import ClinicalEnvelope, RecordStatusChanged, RecordStatusData, deterministic_id
from shared.protocol import Protocol
from tests.unit.notify.conftest import Notifier, act
from tests.unit.safety.clinical import Driver, ae

AWARE = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
"""The site's awareness: the 24 h report is due 2026-03-11 02:00 UTC; reminders at 14:00, 22:00 and 01:00."""
DUE = AWARE + timedelta(hours=24)
OFFICERS = {"safety.officer@sentinel.example", "medical.monitor@sentinel.example"}


def at(hours: float) -> datetime:
    return AWARE + timedelta(hours=hours)


def sae_version(version: int = 1, received: datetime = AWARE, **data: Any) -> ClinicalEnvelope:
    payload: dict[str, Any] = {"seriousness": {"hospitalization": True}, "awareness_at": AWARE} | data
    return ae("S-001", version=version, received=received, **payload)  # type: ignore[no-any-return]


def site_status(value: str, moment: datetime, reason: str | None = None) -> ClinicalEnvelope:
    data = RecordStatusData(record_type="ae", record_id="AE-1", status=value, reason=reason, changed_at=moment)  # type: ignore[arg-type]
    return RecordStatusChanged(
        id=deterministic_id("inbound", "status", value, moment.isoformat()),
        source="/sources/edc",
        subject="S-001",
        time=moment,
        trialid="NCT07212335",
        siteid="SITE-1",
        receivedat=moment,
        senderid=f"status-{value}-{moment.isoformat()}",
        data=data,
    )


class Run:
    """Safety and notify on one database; every signal safety gives goes to notify at once."""

    def __init__(self, tmp_path: Path, protocol: Protocol, name: str = "run") -> None:
        engine = make_engine(f"sqlite:///{tmp_path}/{name}.db")
        create_tables(engine, notify_models.TABLES)
        self.driver = Driver(engine, protocol)
        self.notifier = Notifier(engine=engine, protocol=protocol, clock=FakeClock(AWARE))
        self.signals: list[Any] = []

    def deliver(self, event: ClinicalEnvelope, now: datetime) -> list[str]:
        self.notifier.clock.set(now)
        out = self.driver.apply(event, now=now)
        for signal in out:
            self.notifier.apply(signal)
        self.signals += out
        return [str(getattr(s, "type", "")) for s in out]

    async def until(self, moment: datetime, step: timedelta = timedelta(minutes=30)) -> list[tuple[str, str]]:
        """Walk the clock to `moment` (timers and sends at every step): (recipient, subject) of each SAE mail."""
        sent: list[tuple[str, str]] = []
        now = self.notifier.clock.now()
        while now < moment:
            now = min(now + step, moment)
            sent += await self.notifier.at(now)
        return [(to, subject) for to, subject in sent if "SAE" in subject or "AE-1" in subject]

    def sae_alert(self) -> Alert:
        [alert] = [a for a in self.notifier.rows(Alert) if a.kind == "sae"]
        return alert

    def report(self) -> Obligation:
        [obligation] = self.notifier.rows(Obligation, alert_id=self.sae_alert().id)
        return obligation

    def pending(self) -> list[Timer]:
        alert_id = self.sae_alert().id
        return [t for t in self.notifier.pending() if t.alert_id == alert_id]

    def actions(self) -> list[str]:
        return [e.action for e in self.notifier.history(self.sae_alert().id)]


@pytest.fixture
def run(tmp_path: Path, protocol: Protocol) -> Run:
    return Run(tmp_path, protocol)


# --- pure decisions --------------------------------------------------------------------------------------------


def held(state: str, cancelled_by: str | None = None, reference: str | None = None) -> HeldObligation:
    return HeldObligation("o-1", state, cancelled_by, reference, DUE)


def test_what_a_withdrawal_does_to_each_obligation_state() -> None:
    assert plan_withdrawal([held("open")]).cancel == ("o-1",)
    assert plan_withdrawal([held("overdue")]).cancel == ("o-1",)
    filed = plan_withdrawal([held("completed", reference="EV-123")])
    assert (filed.cancel, filed.filed, filed.changes_anything) == ((), ("EV-123",), True)
    officer = plan_withdrawal([held("cancelled", cancelled_by="admin@example")])
    assert (officer.cancel, officer.standing, officer.changes_anything) == ((), ("o-1",), False)


def test_what_a_restore_does_to_each_obligation_state() -> None:
    assert restore_fate(held("cancelled", cancelled_by="system")) == "reopen"
    assert restore_fate(held("cancelled", cancelled_by="admin@example")) == "officer_closed"
    assert restore_fate(held("completed", reference="EV-123")) == "filed"
    assert restored_deadline(DUE, DUE + timedelta(hours=5)) == DUE, "restoring never moves the deadline later"
    assert restored_deadline(DUE, DUE - timedelta(hours=5)) == DUE - timedelta(hours=5)


def test_the_latest_of_withdrawal_and_restore_decides() -> None:
    assert not stands_withdrawn(["opened", "report_filed"])
    assert stands_withdrawn(["opened", "sae_withdrawn", "follow_up"])
    assert not stands_withdrawn(["opened", "sae_withdrawn", "sae_restored"])


def test_who_hears_of_the_withdrawal() -> None:
    """Sent, being sent, or handed over by a sender that died before recording it: they may have the page."""
    messages = [
        SentMessage("a@x", "email", "sent", attempt_started=False, leased=False),
        SentMessage("b@x", "email", "pending", attempt_started=True, leased=False),
        SentMessage("c@x", "email", "pending", attempt_started=False, leased=True),
        SentMessage("d@x", "email", "pending", attempt_started=False, leased=False),
        SentMessage("e@x", "email", "failed", attempt_started=False, leased=False),
    ]
    assert [r.address for r in paged_recipients(messages)] == ["a@x", "b@x", "c@x"]


# --- through safety and notify ---------------------------------------------------------------------------------


async def test_withdrawn_stops_every_reminder_and_escalation_and_tells_the_paged_officers_once(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    first = await run.until(at(0.5))
    assert {to for to, _ in first} == OFFICERS, "paged at once (step 0)"
    kinds = run.deliver(site_status("entered_in_error", at(0.75), reason="duplicate of AE-2"), at(0.75))
    assert "sae.withdrawn" in kinds
    report = run.report()
    assert (report.state, report.cancelled_by) == ("cancelled", "system")
    assert "entered in error" in (report.cancel_reason or "") and "duplicate of AE-2" in (report.cancel_reason or "")
    assert run.sae_alert().state == "resolved"
    assert run.pending() == [], "no reminder, escalation or overdue timer left"
    later = await run.until(at(40))
    assert sorted(to for to, _ in later) == sorted(OFFICERS), "one notice each, and nothing after it"
    assert all("SAE withdrawn, no report needed" in subject for _, subject in later)
    [entry] = [e for e in run.notifier.history(run.sae_alert().id) if e.action == "sae_withdrawn"]
    assert "the site marked AE AE-1 entered in error (duplicate of AE-2)" in entry.detail
    assert entry.facts["obligations_cancelled"] == [report.id]
    assert "obligation_cancelled" in run.actions()


async def test_a_restore_reopens_the_report_with_its_original_deadline_and_clock(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    run.deliver(site_status("entered_in_error", at(2)), at(2))
    await run.until(at(3))
    run.deliver(site_status("restored", at(4)), at(4))
    report = run.report()
    assert (report.state, report.due_at, report.cancelled_by) == ("open", DUE, None)
    assert run.sae_alert().state == "open"
    assert "sae_restored" in run.actions() and "obligation_reopened" in run.actions()
    page = await run.until(at(4.25))
    assert {to for to, _ in page} == OFFICERS and all("SAE report due" in s for _, s in page), "paged again"
    assert all("restored AE AE-1" in d.body_text for d in run.notifier.rows(Delivery) if d.created_at == at(4))
    reminders = await run.until(at(13) + timedelta(minutes=1))
    assert any("Reminder" in subject for _, subject in reminders), "the 12 h reminder before the original deadline"
    overdue = await run.until(at(25))
    assert any("OVERDUE" in subject for _, subject in overdue), "and overdue after it"


async def test_a_restore_after_the_deadline_is_overdue_at_once(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    run.deliver(site_status("deleted", at(2)), at(2))
    await run.until(at(30))
    run.deliver(site_status("restored", at(30)), at(30))
    assert run.report().due_at == DUE, "the clock did not restart"
    sent = await run.until(at(30.5))
    assert any("OVERDUE" in subject for _, subject in sent)
    assert run.report().state == "overdue"
    [restored] = [e for e in run.notifier.history(run.sae_alert().id) if e.action == "sae_restored"]
    assert "OVERDUE" in restored.detail


async def test_withdrawn_after_the_report_was_filed_says_a_nullification_may_be_needed(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    run.notifier.clock.set(at(5))
    act(run.notifier, "complete", alert=run.sae_alert(), actor="officer@example", reference="EV-2026-001")
    run.deliver(site_status("entered_in_error", at(6), reason="wrong subject"), at(6))
    report = run.report()
    assert (report.state, report.reference) == ("completed", "EV-2026-001"), "the filed report stays on record"
    notices = await run.until(at(7))
    assert sorted(to for to, _ in notices) == sorted(OFFICERS)
    assert all("after its report was filed" in subject for _, subject in notices)
    with Session(run.notifier.engine) as session:
        notice = session.exec(select(Delivery).where(Delivery.subject.contains("after its report"))).first()  # type: ignore[attr-defined]
        assert notice is not None and "nullification" in notice.body_text and "EV-2026-001" in notice.body_text
    run.deliver(site_status("restored", at(8)), at(8))
    assert run.report().state == "completed", "a filed report is not owed again"
    again = await run.until(at(9))
    assert again, "told the AE is back"
    [restored] = [e for e in run.notifier.history(run.sae_alert().id) if e.action == "sae_restored"]
    assert "EV-2026-001 stands" in restored.detail


async def test_withdrawn_before_any_page_went_out_mails_nobody(run: Run) -> None:
    """The AE and its retraction reach notify before a page was handed over: nobody is woken."""
    run.deliver(sae_version(), AWARE)
    run.deliver(site_status("entered_in_error", AWARE + timedelta(seconds=5)), AWARE + timedelta(seconds=5))
    assert await run.until(at(30)) == []
    assert {d.status for d in run.notifier.rows(Delivery, alert_id=run.sae_alert().id)} == {"cancelled"}
    [entry] = [e for e in run.notifier.history(run.sae_alert().id) if e.action == "sae_withdrawn"]
    assert "told nobody" in entry.detail and entry.facts["unsent_withdrawn"] == 2


async def test_a_reminder_queued_in_the_instant_of_the_retraction_is_not_sent(run: Run) -> None:
    """The 12 h reminder fires (queued, not yet handed over) in the instant the retraction arrives: the reminder
    is withdrawn; the officers paged before hear once that the SAE was withdrawn."""
    run.deliver(sae_version(), AWARE)
    paged = {to for to, _ in await run.until(at(11.5))}
    assert paged == OFFICERS | {"principal.investigator@sentinel.example"}, "nobody acknowledged: escalated"
    run.notifier.clock.set(at(12))
    assert await run.notifier.timers.run_due() >= 1, "the reminder fired"
    run.deliver(site_status("entered_in_error", at(12)), at(12))
    sent = await run.until(at(30))
    assert not any("Reminder" in subject for _, subject in sent)
    assert sorted(to for to, _ in sent) == sorted(paged) and all("withdrawn" in s for _, s in sent)


async def test_the_retraction_before_the_reminder_in_the_same_instant_cancels_it(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    await run.until(at(11.5))
    run.deliver(site_status("deleted", at(12)), at(12))
    sent = await run.until(at(30))
    assert not any("Reminder" in subject or "OVERDUE" in subject for _, subject in sent)
    fired = [t for t in run.notifier.rows(Timer, alert_id=run.sae_alert().id) if t.kind == "reminder"]
    assert {t.state for t in fired} == {"cancelled"}


async def test_an_officers_cancellation_stands_through_withdrawal_and_restore(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    act(run.notifier, "cancel", alert=run.sae_alert(), actor="admin@example", reason="not an SAE: duplicate")
    run.deliver(site_status("entered_in_error", at(2)), at(2))
    run.deliver(site_status("restored", at(3)), at(3))
    report = run.report()
    assert (report.state, report.cancelled_by) == ("cancelled", "admin@example")
    assert await run.until(at(30)) == [], "the officer closed it; nothing pages"


async def test_a_redelivered_withdrawal_changes_nothing(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    run.deliver(site_status("entered_in_error", at(2)), at(2))
    [withdrawn] = [s for s in run.signals if getattr(s, "type", "") == "sae.withdrawn"]
    run.notifier.apply(withdrawn)
    run.notifier.apply(withdrawn)
    sent = await run.until(at(30))
    assert sorted(to for to, _ in sent) == sorted(OFFICERS), "still one notice each"
    assert run.actions().count("sae_withdrawn") == 1


async def test_an_acknowledged_sae_withdrawn_and_restored_pages_again(run: Run) -> None:
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    act(run.notifier, "acknowledge", alert=run.sae_alert(), actor="officer@example")
    run.deliver(site_status("entered_in_error", at(2)), at(2))
    run.deliver(site_status("restored", at(3)), at(3))
    alert = run.sae_alert()
    assert (alert.state, alert.acknowledged_by) == ("open", None), "the acknowledgement covered the SAE before"
    assert "acknowledged" in run.actions(), "the officer's acknowledgement stays in the history"


def test_the_withdrawal_travels_as_a_signal_of_the_union(run: Run) -> None:
    """Both sides read it from shared/events.py; a notify older than it rejects it (dead-lettered, never dropped)."""
    from pydantic import TypeAdapter, ValidationError

    from shared.events import SIGNAL_ADAPTER, SaeDetected, SaeUpdated

    run.deliver(sae_version(), AWARE)
    run.deliver(site_status("entered_in_error", at(1)), at(1))
    [withdrawn] = [s for s in run.signals if getattr(s, "type", "") == "sae.withdrawn"]
    assert SIGNAL_ADAPTER.validate_json(withdrawn.model_dump_json()) == withdrawn
    older: TypeAdapter[SaeDetected | SaeUpdated] = TypeAdapter(SaeDetected | SaeUpdated)
    with pytest.raises(ValidationError):
        older.validate_json(withdrawn.model_dump_json())
