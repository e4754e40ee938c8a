"""End to end, on real processes, broker and SMTP: signed webhook -> ingest -> safety -> notify -> mail."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import held_arm_events, post_signed, scenario_events
from tests.e2e.stack import Stack
from tests.polling import wait_for

pytestmark = pytest.mark.e2e
TRIAL = "NCT07212335"
RECIPIENTS = ["medical.monitor@sentinel.example", "safety.officer@sentinel.example"]


def alerts(stack: Stack) -> list[dict[str, object]]:
    response = httpx.get(stack.url("notify") + "/v1/alerts", headers={"authorization": f"Bearer {stack.token}"})
    response.raise_for_status()
    result: list[dict[str, object]] = response.json()
    return result


def settle_mails(catcher: MailCatcher, expected: int) -> None:
    """Wait for the expected mails, then give any extra (a duplicate) time to show up before counting."""
    wait_for(lambda: len(catcher.messages()) >= expected, timeout=60, what=f"{expected} mails")
    with pytest.raises(AssertionError):
        wait_for(lambda: len(catcher.messages()) > expected, timeout=3, what="an unexpected extra mail")


def test_scenario_posted_twice_gives_one_alert_and_one_mail_per_recipient(stack: Stack, catcher: MailCatcher) -> None:
    for service in ("ingest", "safety", "notify"):
        stack.start(service)
    for service in ("ingest", "safety", "notify"):
        stack.wait_ready(service)
    now = datetime.now(UTC)
    events = scenario_events(TRIAL, now)
    # The SAE, the suspected DLT and the SUSAR (a grade 3 related infusion reaction: the RSI expects grade <= 2)
    # to both contacts; the ALT toxicity (worse than a normal baseline) and the creatinine floor grade (4 x
    # baseline, no ULN: at least grade 3) to the safety officer; neutrophils at their baseline grade 4: nothing;
    # arm A then awaits the DLT review (a cohort decision, to both contacts). The AE's onset is the infusion day:
    # an acute reaction at grade 2, re-paged at grade 3 (to both contacts each time).
    expected_mails = 6 * len(RECIPIENTS) + 2
    with httpx.Client() as client:
        first = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
        assert [p.status for p in first] == [202] * len(events), [p.body for p in first]
        settle_mails(catcher, expected_mails)
        again = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
        assert [p.status for p in again] == [200] * len(events)
    settle_mails(catcher, expected_mails)

    mails = catcher.messages()
    sae_mails = [m for m in mails if "SAE report due" in str(m["Subject"])]
    lab_mails = [m for m in mails if "Alanine aminotransferase increased grade 3" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in sae_mails) == RECIPIENTS
    assert [str(m["To"]) for m in lab_mails] == ["safety.officer@sentinel.example"]
    floor_mails = [m for m in mails if "Creatinine increased at least grade 3" in str(m["Subject"])]
    assert [str(m["To"]) for m in floor_mails] == ["safety.officer@sentinel.example"]
    due = (now - timedelta(hours=1) + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M UTC")
    assert due in str(sae_mails[0]["Subject"])
    every = alerts(stack)
    listed = {str(a["kind"]): a for a in every if "Creatinine" not in str(a["title"])}
    assert set(listed) == {"sae", "lab_toxicity", "dlt", "susar", "cohort_decision", "acute_reaction"}, (
        "baseline grade 4: no page"
    )
    assert "awaiting_dlt_review" in str(listed["cohort_decision"]["title"])
    [floor] = [a for a in every if "Creatinine" in str(a["title"])]
    assert "at least grade 3" in str(floor["title"])
    dlt_mails = [m for m in mails if "Suspected DLT" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in dlt_mails) == RECIPIENTS
    obligations = listed["sae"]["obligations"]
    assert isinstance(obligations, list) and len(obligations) == 1
    assert obligations[0]["state"] == "open" and obligations[0]["clock_basis"] == "site"
    [review] = listed["lab_toxicity"]["obligations"]  # type: ignore[misc]
    assert review["kind"] == "lab_review" and review["state"] == "open" and review["clock_basis"] == "receipt"
    susar = listed["susar"]["obligations"]
    assert isinstance(susar, list) and sorted(str(o["kind"]) for o in susar) == ["susar_report"] * 3  # 3 recipients
    susar_mails = [m for m in mails if "SUSAR" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in susar_mails) == RECIPIENTS


def test_safety_killed_between_db_commit_and_offset_commit_loses_and_duplicates_nothing(
    stack: Stack, catcher: MailCatcher, tmp_path: Path
) -> None:
    stack.start("ingest")
    stack.start("notify")
    crashing = stack.start("safety", SENTINEL_SAFETY_FAILPOINT="crash_before_offset_commit")
    stack.wait_ready("ingest")
    stack.wait_ready("notify")
    now = datetime.now(UTC)
    # the serious AE version, alone on a fresh topic
    sae = next(e for e in scenario_events(TRIAL, now) if str(e["id"]).endswith("ae-1-v2"))
    with httpx.Client() as client:
        assert post_signed(client, stack.url("ingest"), "edc", stack.secret, sae, now=now).status == 202

    assert crashing.wait(timeout=60) == -9, stack.log("safety")
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from processed_events").fetchone() == (1,)
        # the SAE and the SUSAR signal (a grade 3 related infusion reaction, unexpected per the RSI)
        assert db.execute("select count(*) from outbox where sent_at is null").fetchone() == (2,)
    assert catcher.messages() == [], "the signals must not have left before the crash in this scenario"

    stack.start("safety")
    stack.wait_ready("safety")
    settle_mails(catcher, 2 * len(RECIPIENTS))
    assert sorted(str(a["kind"]) for a in alerts(stack)) == ["sae", "susar"]
    metrics = httpx.get(stack.url("safety") + "/metrics").text
    assert 'sentinel_safety_events_processed_total{outcome="duplicate"} 1.0' in metrics
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from outbox where sent_at is null").fetchone() == (0,)
        assert db.execute("select count(*) from safety_ae_versions").fetchone() == (1,)


def test_two_suspected_dlts_hold_the_arm_and_enrolling_above_it_pages(stack: Stack, catcher: MailCatcher) -> None:
    """Issue 10 points 1-2 through the webhook: 1 + 1 suspected DLTs in arm A reach the stopping rule; the arm is
    held (never escalated) until the review ends, and enrolling into arm B is a deviation that pages."""
    for service in ("ingest", "safety", "notify"):
        stack.start(service)
    for service in ("ingest", "safety", "notify"):
        stack.wait_ready(service)
    now = datetime.now(UTC)
    events = [*scenario_events(TRIAL, now, subject="101-001"), *held_arm_events(TRIAL, now, subject="101-002")]
    enrol_b = {
        "id": "102-001-enrol",
        "type": "enrollment",
        "study": TRIAL,
        "site": "102",
        "subject": "102-001",
        "data": {"arm": "B", "enrolled_at": now.date().isoformat()},
    }
    auth = {"authorization": f"Bearer {stack.token}"}
    with httpx.Client() as client:
        posted = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
        assert [p.status for p in posted] == [202] * len(events), [p.body for p in posted]

        def arm_a() -> dict[str, object]:
            response = client.get(stack.url("safety") + f"/v1/trials/{TRIAL}/cohorts", headers=auth)
            response.raise_for_status()
            first: dict[str, object] = response.json()[0]
            return first

        wait_for(lambda: arm_a()["decision"] == "hold", timeout=60, what="arm A on hold")
        assert (arm_a()["dlt_confirmed"], arm_a()["dlt_suspected"], arm_a()["stopping_rule"]) == (0, 2, True)
        wait_for(
            lambda: any("Stopping rule fired in arm A" in str(m["Subject"]) for m in catcher.messages()),
            timeout=60,
            what="the stopping-rule page",
        )
        assert post_signed(client, stack.url("ingest"), "edc", stack.secret, enrol_b, now=now).status == 202
    wait_for(
        lambda: any(
            "URGENT Protocol deviation (enrolled_above_arm_hold)" in str(m["Subject"]) for m in catcher.messages()
        ),
        timeout=60,
        what="the paging deviation",
    )
    deviation = next(a for a in alerts(stack) if a["kind"] == "protocol_deviation")
    obligations = deviation["obligations"]
    assert isinstance(obligations, list) and [o["state"] for o in obligations] == ["open"]


def test_safety_killed_after_committing_a_whole_batch_redelivers_it_as_duplicates_only(
    stack: Stack, catcher: MailCatcher, tmp_path: Path
) -> None:
    """The whole scenario waits on the topic, safety takes it as one batch, commits it and dies before the
    offset commit: after the restart every record of the batch is a duplicate and each mail goes out once."""
    stack.start("ingest")
    stack.start("notify")
    stack.wait_ready("ingest")
    stack.wait_ready("notify")
    now = datetime.now(UTC)
    events = scenario_events(TRIAL, now)
    with httpx.Client() as client:
        posted = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
    assert [p.status for p in posted] == [202] * len(events)

    crashing = stack.start("safety", SENTINEL_SAFETY_FAILPOINT="crash_before_offset_commit")
    assert crashing.wait(timeout=60) == -9, stack.log("safety")
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from processed_events").fetchone() == (len(events),), "one batch"

    stack.start("safety")
    stack.wait_ready("safety")
    settle_mails(catcher, 6 * len(RECIPIENTS) + 2)  # as in the first test: each mail once
    metrics = httpx.get(stack.url("safety") + "/metrics").text
    assert f'sentinel_safety_events_processed_total{{outcome="duplicate"}} {float(len(events))}' in metrics
    kinds = {str(a["kind"]) for a in alerts(stack)} - {"assessment_missed"}  # the sweep's, by the clock
    assert kinds == {"sae", "lab_toxicity", "dlt", "susar", "cohort_decision", "acute_reaction"}
    with sqlite3.connect(tmp_path / "var" / "safety.db") as db:
        assert db.execute("select count(*) from outbox where sent_at is null").fetchone() == (0,)
