"""Issue 13 through the signed webhook, on real processes, broker and SMTP: a subject dosed while not eligible, and a
dose from a lot that failed release, each page the safety officer and the principal investigator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import (
    NO_HISTORY_EXCLUSION,
    ineligible_subject_events,
    post_signed,
    screening_labs,
    unreleased_lot_dose,
)
from tests.e2e.stack import Stack
from tests.polling import wait_for

pytestmark = pytest.mark.e2e
TRIAL = "NCT07212335"
PAGED = {
    "medical.monitor@sentinel.example",
    "principal.investigator@sentinel.example",
    "safety.officer@sentinel.example",
}


@pytest.fixture
def stack(stack: Stack) -> Stack:
    """The shared stack (tests/e2e/conftest.py, which stops it) with ingest, safety and notify running."""
    for service in ("ingest", "safety", "notify"):
        stack.start(service)
    for service in ("ingest", "safety", "notify"):
        stack.wait_ready(service)
    return stack


def post_all(stack: Stack, events: list[dict[str, Any]], now: datetime) -> None:
    with httpx.Client() as client:
        posted = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
    assert [p.status for p in posted] == [202] * len(events), [p.body for p in posted]


def deviation_mails(catcher: MailCatcher, kind: str) -> list[str]:
    return sorted(
        str(m["To"]) for m in catcher.messages() if f"URGENT Protocol deviation ({kind})" in str(m["Subject"])
    )


def deviation_alerts(stack: Stack, subject: str) -> list[dict[str, Any]]:
    response = httpx.get(
        stack.url("notify") + "/v1/alerts",
        params={"subject": subject},
        headers={"authorization": f"Bearer {stack.token}"},
    )
    response.raise_for_status()
    return [a for a in response.json() if a["kind"] == "protocol_deviation"]


def test_a_subject_dosed_while_ineligible_pages_the_officer_and_the_pi(stack: Stack, catcher: MailCatcher) -> None:
    now = datetime.now(UTC)
    post_all(stack, ineligible_subject_events(TRIAL, now, subject="102-009"), now)
    wait_for(lambda: len(deviation_mails(catcher, "dosed_while_ineligible")) >= 3, timeout=60, what="3 pages")
    assert set(deviation_mails(catcher, "dosed_while_ineligible")) == PAGED
    [alert] = deviation_alerts(stack, "102-009")
    assert alert["details"]["kind"] == "dosed_while_ineligible"
    assert "ALT >= 3 x ULN" in alert["details"]["detail"] and "3.75 x ULN" in alert["details"]["detail"]
    assert [o["state"] for o in alert["obligations"]] == ["open"]  # reviewed until acknowledged


def test_a_dose_from_a_lot_below_release_viability_pages_at_once(stack: Stack, catcher: MailCatcher) -> None:
    now = datetime.now(UTC)
    subject, day0 = "101-077", now - timedelta(hours=2)

    def event(suffix: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"{subject}-{suffix}",
            "type": kind,
            "study": TRIAL,
            "site": "101",
            "subject": subject,
            "data": data,
        }

    enrolment = {
        "arm": "A",
        "enrolled_at": (now - timedelta(days=2)).date().isoformat(),
        "car_t_infused_on": (now - timedelta(days=30)).date().isoformat(),
        "history": NO_HISTORY_EXCLUSION,
    }
    events = [
        event("enrol", "enrollment", enrolment),
        *screening_labs(event, day0),
        unreleased_lot_dose(TRIAL, now, subject=subject),
    ]
    post_all(stack, events, now)
    wait_for(lambda: len(deviation_mails(catcher, "lot_release_failed")) >= 3, timeout=60, what="3 pages")
    assert set(deviation_mails(catcher, "lot_release_failed")) == PAGED
    [alert] = deviation_alerts(stack, subject)  # eligible: the release is the only deviation
    assert "UC-0042" in alert["details"]["detail"] and "viability 84.9% < 85%" in alert["details"]["detail"]
