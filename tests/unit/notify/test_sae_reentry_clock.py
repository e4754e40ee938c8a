"""Notify's side of a serious AE the site re-entered under a new AE id (safety and notify on one database, a fake
clock): the report is owed on the first record's clock, whichever of the re-entry and the retraction came first,
and the safety officer hears which records were linked and why."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from services.notify.models import Alert, Obligation
from shared.protocol import Protocol
from tests.unit.notify.test_sae_withdrawal import AWARE, Run, at, sae_version, site_status

OFFICER = "safety.officer@sentinel.example"


@pytest.fixture
def run(tmp_path: Path, protocol: Protocol) -> Run:
    return Run(tmp_path, protocol)


def report_of(run: Run, ae_id: str) -> Obligation:
    [alert] = [a for a in run.notifier.rows(Alert) if a.kind == "sae" and a.thread_key.endswith(f":{ae_id}")]
    [obligation] = run.notifier.rows(Obligation, alert_id=alert.id)
    return obligation


def plain(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


async def test_the_re_entry_is_owed_by_the_first_records_deadline_and_the_officer_hears_of_the_link(run: Run) -> None:
    run.deliver(sae_version(awareness_at=None), AWARE)  # no awareness date: the clock is our receipt, 02:00
    run.deliver(site_status("entered_in_error", at(20), reason="wrong form"), at(20))
    run.deliver(sae_version(ae_id="AE-2", received=at(21), awareness_at=None), at(21))
    report = report_of(run, "AE-2")
    assert (report.clock_started_at, report.due_at) == (AWARE, at(24)), "due 24 h after AE-1's receipt, not AE-2's"
    await run.until(at(21.5))
    sent = list(run.notifier.channel.sent)
    [page] = [m for m in sent if str(m["To"]) == OFFICER and "SAE report due" in str(m["Subject"])][-1:]
    assert "of AE AE-1, which the site took back and re-entered as this AE" in plain(page)
    [finding] = [m for m in sent if str(m["To"]) == OFFICER and "Data quality" in str(m["Subject"])]
    assert "SAE re-entered under a new AE id" in str(finding["Subject"]) and "ae AE-2" in str(finding["Subject"])
    assert "taken as the re-entry of serious AE AE-1" in plain(finding)


async def test_a_re_entry_paged_before_the_retraction_moves_its_deadline_earlier_when_it_comes(run: Run) -> None:
    run.deliver(sae_version(awareness_at=None), AWARE)
    run.deliver(sae_version(ae_id="AE-2", received=at(21), awareness_at=None), at(21))
    assert report_of(run, "AE-2").due_at == at(45), "on its own receipt while AE-1 stands"
    run.deliver(site_status("entered_in_error", at(22), reason="duplicate of AE-2"), at(22))
    report = report_of(run, "AE-2")
    assert (report.clock_started_at, report.due_at) == (AWARE, at(24))
    await run.until(at(22.5))
    pages = [m for m in run.notifier.channel.sent if "AE-2" in plain(m) and "due earlier" in plain(m)]
    assert pages and all("it re-enters AE AE-1, which the site took back" in plain(m) for m in pages)
