"""The safety physician's third review, notify's side: SAE withdrawal on the site's retraction, as the people paged
live it (safety and notify on one database, a fake clock walked forward, every mail read).

Held to: after the site's retraction nothing more pages for the AE (no reminder, escalation, overdue page, for the
SAE or anything else the AE raised); whoever was paged hears once, in a mail that names the trial, site, subject,
AE and the site's reason and says what to do; a restore owes the report again by its original deadline, and a page
that says so at a glance when that deadline has passed. A case where the system is wrong is xfail(strict).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from services.notify.mail_content import sae_mail
from services.notify.models import Alert, Obligation
from shared.events import AwarenessBasis, SaeData
from shared.protocol import Protocol
from tests.unit.notify.test_sae_withdrawal import AWARE, DUE, OFFICERS, Run, at, sae_version, site_status
from tests.unit.safety.clinical import ae, dose, enrol

PI = "principal.investigator@sentinel.example"


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


def mails_since(run: Run, start: int) -> list[EmailMessage]:
    return list(run.notifier.channel.sent[start:])


@pytest.fixture
def run(tmp_path: Path, protocol: Protocol) -> Run:
    return Run(tmp_path, protocol)


# --- the page's subject ------------------------------------------------------------------------------------------


def test_the_sae_page_subject_says_overdue_and_restored_at_a_glance() -> None:
    """Was: a restore after the deadline paged '[T] SAE report due 2026-03-11 02:00 UTC: ...' three days later, a
    date in the past and nothing else in the subject; only the body said OVERDUE and restored."""
    data = SaeData(
        site_id="SITE-1",
        subject_id="S-001",
        ae_id="AE-1",
        ae_version=1,
        term="Pneumonitis",
        grade=3,
        criteria=["hospitalization"],
        awareness_at=AWARE,
        awareness_basis=AwarenessBasis.SITE,
        received_at=AWARE,
        source_event_id="e-1",
        relatedness=None,
        outcome=None,
        onset=None,
    )
    plain = sae_mail("T", data, due_at=DUE, hours=24, reason="new SAE")
    assert plain.subject == "[T] SAE report due 2026-03-11 02:00 UTC: Pneumonitis, subject S-001"
    late = sae_mail("T", data, due_at=DUE, hours=24, reason="r", overdue=True, restored=True)
    assert late.subject == (
        "[T] SAE report due 2026-03-11 02:00 UTC (OVERDUE; AE restored by the site): Pneumonitis, subject S-001"
    )


# --- racing the deadline -------------------------------------------------------------------------------------------


async def test_a_retraction_one_minute_after_the_overdue_page_stops_it_and_tells_everyone_paged(run: Run) -> None:
    """Nobody filed; the report went OVERDUE at 02:00 on day 1 and the PI was paged by escalation. The site marks the
    AE entered in error at 02:01. Right: the overdue obligation is cancelled (not deleted), no overdue repeat or
    escalation follows, and the officer, the monitor and the PI each get one notice that names the AE, the subject,
    the site and the site's reason and says no report is needed."""
    run.deliver(sae_version(), AWARE)
    overdue = await run.until(DUE + timedelta(seconds=30), step=timedelta(minutes=15))
    assert any("OVERDUE" in subject for _, subject in overdue)
    assert run.report().state == "overdue"
    start = len(run.notifier.channel.sent)
    run.deliver(site_status("entered_in_error", DUE + timedelta(minutes=1), reason="wrong subject"), DUE)
    report = run.report()
    assert (report.state, report.cancelled_by) == ("cancelled", "system")
    assert run.pending() == []
    await run.until(at(72))
    notices = mails_since(run, start)
    assert sorted(str(m["To"]) for m in notices) == sorted(OFFICERS | {PI}), "one notice each, nothing else"
    for mail in notices:
        assert str(mail["Subject"]) == "[NCT07212335] SAE withdrawn, no report needed: Pneumonitis, subject S-001"
        text = body(mail)
        for words in ("AE AE-1", "Site: SITE-1", "Subject: S-001", "wrong subject", "You need not file an SAE report"):
            assert words in text, words


# --- a restore days later, and a second retraction -------------------------------------------------------------------


async def test_a_restore_days_after_the_deadline_pages_overdue_and_a_second_retraction_stops_it_again(
    run: Run,
) -> None:
    """Withdrawn on day 0 (2 h after awareness), restored on day 4, deleted again on day 4 two hours later. Right:
    the restore pages at once with OVERDUE and 'restored' in the subject, the report due when it always was; the
    second retraction cancels the reopened report again and tells everyone the restore paged (the PI too, reached
    by escalation after the restore), and nothing pages after it."""
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    run.deliver(site_status("entered_in_error", at(2)), at(2))
    await run.until(at(96))
    start = len(run.notifier.channel.sent)
    run.deliver(site_status("restored", at(96)), at(96))
    assert run.report().due_at == DUE, "the clock did not restart"
    await run.until(at(97.5))
    assert run.report().state == "overdue"
    restored = [m for m in mails_since(run, start) if "AE restored by the site" in str(m["Subject"])]
    assert {str(m["To"]) for m in restored} == OFFICERS
    for mail in restored:
        assert "(OVERDUE; AE restored by the site): Pneumonitis, subject S-001" in str(mail["Subject"])
        assert "the site restored AE AE-1; the SAE report is OVERDUE (due 2026-03-11 02:00 UTC" in body(mail)
    paged = {str(m["To"]) for m in mails_since(run, start)}
    assert PI in paged, "escalation ran again after the restore"
    start = len(run.notifier.channel.sent)
    run.deliver(site_status("deleted", at(98), reason="duplicate of AE-2"), at(98))
    assert run.report().state == "cancelled" and run.pending() == []
    await run.until(at(150))
    notices = mails_since(run, start)
    assert sorted(str(m["To"]) for m in notices) == sorted(paged)
    assert all("SAE withdrawn, no report needed" in str(m["Subject"]) for m in notices)
    assert run.actions().count("sae_withdrawn") == 2 and run.actions().count("sae_restored") == 1


# --- one AE, four alerts ------------------------------------------------------------------------------------------


INFUSED = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)


def infusion_reaction_run(run: Run) -> None:
    """S-001, arm A, infused at 00:00; a grade 3 infusion-related reaction at 01:00, hospitalised, 'probable',
    reported at 02:00: SAE, SUSAR (the RSI lists it up to grade 2), suspected DLT, acute reaction."""
    run.deliver(enrol("S-001", "A", INFUSED.date()), INFUSED)
    run.deliver(dose("S-001", INFUSED), INFUSED)
    reaction = ae(
        "S-001",
        term="Infusion related reaction",
        grade=3,
        relatedness="probable",
        onset=INFUSED.date().isoformat(),
        onset_at=(INFUSED + timedelta(hours=1)).isoformat(),
        seriousness={"hospitalization": True},
        awareness_at=INFUSED + timedelta(hours=2),
        received=INFUSED + timedelta(hours=2),
    )
    kinds = run.deliver(reaction, INFUSED + timedelta(hours=2))
    assert {"sae.detected", "susar.detected", "dlt.suspected", "acute_reaction.detected"} <= set(kinds)


async def walk(run: Run, until: datetime) -> list[tuple[str, str]]:
    sent: list[tuple[str, str]] = []
    now = run.notifier.clock.now()
    while now < until:
        now = min(now + timedelta(minutes=30), until)
        sent += await run.notifier.at(now)
    return sent


async def test_the_sae_susar_and_dlt_of_a_retracted_ae_all_stop(run: Run) -> None:
    """Right: the SAE report, the three SUSAR reports and the DLT review are cancelled with why, their alerts
    resolved; every mail about the AE after the retraction says it was withdrawn (one per alert and person)."""
    infusion_reaction_run(run)
    await walk(run, INFUSED + timedelta(hours=3))
    run.deliver(site_status("entered_in_error", INFUSED + timedelta(hours=3)), INFUSED + timedelta(hours=3))
    by_kind = {o.kind: o for o in run.notifier.rows(Obligation)}
    for kind in ("sae_report", "susar_report", "dlt_review"):
        assert by_kind[kind].state == "cancelled", kind
        assert "entered in error" in (by_kind[kind].cancel_reason or ""), kind
    alerts = {a.kind: a.state for a in run.notifier.rows(Alert)}
    assert (alerts["sae"], alerts["susar"], alerts["dlt"]) == ("resolved", "resolved", "resolved")
    start = len(run.notifier.channel.sent)
    after = [s for _, s in await walk(run, INFUSED + timedelta(days=5)) if "Infusion related reaction" in s]
    about_sae_susar_dlt = [s for s in after if "Acute reaction" not in s]
    assert about_sae_susar_dlt and all("withdrawn" in s.lower() for s in about_sae_susar_dlt), about_sae_susar_dlt
    dlt = [m for m in mails_since(run, start) if "Suspected DLT withdrawn" in str(m["Subject"])]
    assert dlt and all(body(m).startswith("Suspected DLT withdrawn, its review cancelled: grade 3") for m in dlt)
    assert all("the site marked this AE entered in error" in body(m).splitlines()[0] for m in dlt), (
        "the first line says why (was: 'no longer meets the protocol's criteria', true of a downgrade, not of this)"
    )
    susar = [m for m in mails_since(run, start) if "SUSAR withdrawn" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in susar) == sorted(OFFICERS), "the people paged for the SUSAR, once each"
    for mail in susar:
        assert "expedited reports no longer due" in str(mail["Subject"])
        for words in ("AE AE-1", "Site: SITE-1", "Subject: S-001", "entered in error", "Reports no longer due: 3"):
            assert words in body(mail), words


async def test_a_susar_submitted_then_retracted_tells_the_officers_a_nullification_may_be_needed(run: Run) -> None:
    """The officer submitted the SUSAR to the regulator, the ethics committee and the investigators on day 1; on day 2
    the site marks the AE entered in error. Right: the submitted reports stay on record; the officers hear once
    that each recipient holds a case that no longer stands (ICH E2B(R3) C.1.11 nullification or a follow-up), with
    the references; a redelivered withdrawal tells nobody twice. Was: silence (only the SAE notice spoke of a
    nullification, for the SAE report alone)."""
    from tests.unit.notify.conftest import act

    infusion_reaction_run(run)
    await walk(run, INFUSED + timedelta(days=1))
    [alert] = [a for a in run.notifier.rows(Alert) if a.kind == "susar"]
    for n, obligation in enumerate(o for o in run.notifier.rows(Obligation) if o.kind == "susar_report"):
        act(run.notifier, "complete", alert=alert, obligation=obligation, actor="officer", reference=f"EV-{n}")
    start = len(run.notifier.channel.sent)
    run.deliver(site_status("entered_in_error", INFUSED + timedelta(days=2)), INFUSED + timedelta(days=2))
    [withdrawn] = [s for s in run.signals if getattr(s, "type", "") == "susar.withdrawn"]
    run.notifier.apply(withdrawn)
    await walk(run, INFUSED + timedelta(days=2, hours=1))
    notices = [m for m in mails_since(run, start) if "SUSAR withdrawn" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in notices) == sorted(OFFICERS | {PI}), "everyone paged (the PI by escalation)"
    for mail in notices:
        assert "after reports were submitted" in str(mail["Subject"])
        text = body(mail)
        assert "nullification" in text and all(f"EV-{n}" in text for n in range(3)), text
    states = {o.state for o in run.notifier.rows(Obligation) if o.kind == "susar_report"}
    assert states == {"completed"}, "the submitted reports stay on record"


async def test_the_acute_reaction_of_a_retracted_ae_stops_paging(run: Run) -> None:
    infusion_reaction_run(run)
    await walk(run, INFUSED + timedelta(hours=3))
    run.deliver(site_status("entered_in_error", INFUSED + timedelta(hours=3)), INFUSED + timedelta(hours=3))
    after = [s for _, s in await walk(run, INFUSED + timedelta(days=5)) if "Acute reaction" in s]
    assert not [s for s in after if "OVERDUE" in s or "Reminder" in s], after[:3]


async def test_a_retracted_acute_reaction_tells_who_was_paged_once_and_comes_back_on_restore(run: Run) -> None:
    """The review is cancelled (with why), each person paged about the reaction hears once that no review is owed;
    the site's restore re-pages it with a new review open."""
    infusion_reaction_run(run)
    paged = await walk(run, INFUSED + timedelta(hours=3))
    reaction_paged = {to for to, subject in paged if "Acute reaction" in subject}
    start = len(run.notifier.channel.sent)
    run.deliver(site_status("entered_in_error", INFUSED + timedelta(hours=3)), INFUSED + timedelta(hours=3))
    await walk(run, INFUSED + timedelta(hours=4))
    notices = [m for m in mails_since(run, start) if "Acute reaction withdrawn, no review needed" in str(m["Subject"])]
    assert reaction_paged and sorted(str(m["To"]) for m in notices) == sorted(reaction_paged)
    assert all("the site marked AE AE-1 entered in error" in body(m) for m in notices)
    [acute] = [a for a in run.notifier.rows(Alert) if a.kind == "acute_reaction"]
    assert "acute_reaction_withdrawn" in [e.action for e in run.notifier.history(acute.id)]
    [review] = run.notifier.rows(Obligation, alert_id=acute.id)
    assert review.state == "cancelled" and "entered in error" in (review.cancel_reason or "")
    restored = run.deliver(site_status("restored", INFUSED + timedelta(hours=5)), INFUSED + timedelta(hours=5))
    assert "acute_reaction.detected" in restored
    again = await walk(run, INFUSED + timedelta(hours=6))
    assert {to for to, subject in again if "Acute reaction" in subject} >= reaction_paged


async def test_a_redelivered_restore_pages_once(run: Run) -> None:
    """The restore's sae.detected reaches notify twice (the outbox relay crashed after publishing). Right: one page
    per person, one reopening in the history."""
    run.deliver(sae_version(), AWARE)
    await run.until(at(1))
    run.deliver(site_status("entered_in_error", at(2)), at(2))
    run.deliver(site_status("restored", at(3)), at(3))
    [restore] = [s for s in run.signals if getattr(s, "type", "") == "sae.detected"][-1:]
    start = len(run.notifier.channel.sent)
    run.notifier.apply(restore)
    await run.until(at(3.25))
    pages = [m for m in mails_since(run, start) if "AE restored by the site" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in pages) == sorted(OFFICERS)
    assert run.actions().count("sae_restored") == 1 and run.actions().count("obligation_reopened") == 1


async def test_an_sae_reported_after_its_deadline_says_overdue_in_the_subject(run: Run) -> None:
    """The site became aware on day 0 at 02:00 but entered the SAE 30 h later. Right: the first page's subject says
    OVERDUE (the body always did), not only a due date already past."""
    run.deliver(sae_version(received=at(30)), at(30))
    first = await run.until(at(30.25))
    pages = [s for _, s in first if "SAE report due" in s]
    assert pages and all("SAE report due 2026-03-11 02:00 UTC (OVERDUE): Pneumonitis" in s for s in pages), pages


async def test_the_officer_and_the_monitor_hear_that_a_confirmed_dlts_ae_was_taken_back(run: Run) -> None:
    """The officer confirmed the DLT; the site then marks the AE entered in error. Right: the DLT still counts (the
    confirmation is final) and the officer and the monitor get a mail that says so and what to check."""
    from sqlmodel import Session

    from services.safety.protocol_engine import decide_dlt, dlt_id_for

    infusion_reaction_run(run)
    await walk(run, INFUSED + timedelta(hours=3))
    with Session(run.driver.engine) as session, session.begin():
        decided = decide_dlt(
            session,
            protocol=run.driver.protocol,
            dlt_id=dlt_id_for("NCT07212335", "S-001", "AE-1"),
            decision="confirmed",
            actor="officer@site",
            reason="reviewed",
            now=INFUSED + timedelta(hours=4),
            signals_topic="test.signals.v1",
        )
    for out in decided.signals:
        run.notifier.apply(out.envelope)
    start = len(run.notifier.channel.sent)
    run.deliver(site_status("entered_in_error", INFUSED + timedelta(hours=5)), INFUSED + timedelta(hours=5))
    await walk(run, INFUSED + timedelta(hours=6))
    about = [m for m in mails_since(run, start) if "confirmed by officer@site" in body(m)]
    assert {str(m["To"]) for m in about} >= OFFICERS, [str(m["Subject"]) for m in mails_since(run, start)]
    assert all("arm A's 3+3 tally" in body(m) for m in about)
    assert all(
        str(m["Subject"]).startswith("[NCT07212335] Data quality: AE behind a CONFIRMED DLT retracted by the site")
        for m in about
    ), "was: 'Confirmed dlt ae retracted', the code with its underscores"
