"""End to end through the signed webhook: the 24-hour acute-reaction window and infusion-day vitals.

An AE whose onset (a time written into `onset`) is 3 h after the infusion is an acute reaction at grade 2: it
pages the safety officer and the medical monitor with a review clock and is shown on the subject API; an AE
with onset 30 h after is not. A fever measured during the infusion is graded by CTCAE and mailed as a lab
toxicity to the safety officer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import NO_HISTORY_EXCLUSION, post_signed, screening_labs
from tests.e2e.stack import Stack
from tests.e2e.test_webhook_to_mail import alerts, settle_mails
from tests.polling import wait_for

pytestmark = pytest.mark.e2e
TRIAL = "NCT07212335"
SUBJECT = "201-001"
BOTH = ["medical.monitor@sentinel.example", "safety.officer@sentinel.example"]


def event(suffix: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"{SUBJECT}-{suffix}", "type": kind, "study": TRIAL, "site": "201", "subject": SUBJECT, "data": data}


def test_an_ae_within_24_hours_of_the_infusion_is_an_acute_reaction(stack: Stack, catcher: MailCatcher) -> None:
    for service in ("ingest", "safety", "notify"):
        stack.start(service)
    for service in ("ingest", "safety", "notify"):
        stack.wait_ready(service)
    now = datetime.now(UTC).replace(microsecond=0)
    site = timezone(timedelta(hours=1))
    infused = (now - timedelta(hours=40)).astimezone(site)
    events = [
        event(
            "enrol",
            "enrollment",
            {
                "arm": "A",
                "enrolled_at": (infused - timedelta(days=1)).date().isoformat(),
                "car_t_infused_on": (infused - timedelta(days=30)).date().isoformat(),
                "history": NO_HISTORY_EXCLUSION,
            },
        ),
        # eligible and sampled as the protocol asks, so that only the rules under test speak
        *screening_labs(event, infused),
        event("sample-0", "sample", {"sample_id": "IMM-0", "kind": "immunology", "collected_at": infused.isoformat()}),
        event(
            "dose-1",
            "dose",
            {"dose_id": "D-1", "number": 1, "administered_at": infused.isoformat(), "cells_per_kg": 2000000},
        ),
        event(
            "vitals-30",
            "vitals",
            {
                "vitals_id": "VS-30",
                "measured_at": (infused + timedelta(minutes=30)).isoformat(),
                "temperature_c": "38.6",
                "systolic_bp": "112",
                "diastolic_bp": "70",
                "heart_rate": "104",
            },
        ),
        event(
            "ae-1",
            "ae",
            {
                "ae_id": "AE-1",
                "version": 1,
                "term": "Chills",
                "grade": 2,
                "relatedness": "possible",
                "onset": (infused + timedelta(hours=3)).isoformat(),  # date and time in the onset field
            },
        ),
        event(
            "ae-2",
            "ae",
            {
                "ae_id": "AE-2",
                "version": 1,
                "term": "Headache",
                "grade": 3,
                "relatedness": "not_related",
                "onset_at": (infused + timedelta(hours=30)).isoformat(),
            },
        ),
    ]
    with httpx.Client() as client:
        posted = [post_signed(client, stack.url("ingest"), "edc", stack.secret, e, now=now) for e in events]
        assert [p.status for p in posted] == [202] * len(events), [p.body for p in posted]
        settle_mails(catcher, len(BOTH) + 1)  # the acute reaction to both, the fever to the safety officer

        mails = catcher.messages()
        acute = [m for m in mails if "Acute reaction Chills grade 2" in str(m["Subject"])]
        assert sorted(str(m["To"]) for m in acute) == BOTH
        assert not any("Headache" in str(m["Subject"]) for m in mails), "onset 30 h after: not acute"
        fever = [m for m in mails if "Fever grade 1" in str(m["Subject"])]
        assert [str(m["To"]) for m in fever] == ["safety.officer@sentinel.example"]
        assert "Vital-sign finding: Fever grade 1." in fever[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]

        [alert] = [a for a in alerts(stack) if a["kind"] == "acute_reaction"]
        [obligation] = alert["obligations"]  # type: ignore[misc]
        assert (obligation["kind"], obligation["state"]) == ("acute_reaction_review", "open")

        auth = {"authorization": f"Bearer {stack.token}"}

        def subject() -> dict[str, Any]:
            response = client.get(stack.url("safety") + f"/v1/trials/{TRIAL}/subjects/{SUBJECT}", headers=auth)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        wait_for(lambda: len(subject()["acute_reactions"]) == 1, timeout=30, what="the acute reaction on the API")
        [shown] = subject()["acute_reactions"]
        assert (shown["ae_id"], shown["grade"], shown["dose_number"]) == ("AE-1", 2, 1)
        assert (shown["onset_precision"], shown["hours_after_infusion"]) == ("time", "3.0")
        assert [v["temperature_c"] for v in subject()["vital_signs"]] == ["38.6"]
