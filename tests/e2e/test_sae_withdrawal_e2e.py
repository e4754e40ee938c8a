"""End to end, on real processes, broker and SMTP: an SAE the site takes back and then restores.

Signed webhook (a serious AE) -> the SAE page to both contacts; the site's "entered in error" -> the obligation
cancelled, one "withdrawn, no report needed" mail to each paged contact; the site's restore -> the obligation open
again with the original deadline, paged again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import post_signed
from tests.e2e.stack import Stack
from tests.e2e.test_webhook_to_mail import RECIPIENTS, TRIAL, alerts, settle_mails

pytestmark = pytest.mark.e2e


def event(kind: str, event_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "study": TRIAL, "site": "101", "subject": "101-009", "data": data}


def sae_alert(stack: Stack) -> dict[str, Any]:
    [alert] = [a for a in alerts(stack) if a["kind"] == "sae"]
    return alert


def test_an_sae_taken_back_then_restored_end_to_end(stack: Stack, catcher: MailCatcher) -> None:
    for service in ("ingest", "safety", "notify"):
        stack.start(service)
    for service in ("ingest", "safety", "notify"):
        stack.wait_ready(service)
    now = datetime.now(UTC)
    aware = now - timedelta(hours=1)
    ae = {
        "ae_id": "AE-RETRACT-1",
        "version": 1,
        "term": "Pneumonitis",
        "grade": 3,
        "serious": True,
        "seriousness": {"hospitalization": True},
        "relatedness": "not_related",  # no SUSAR, no DLT: the SAE alone
        "onset": (now - timedelta(days=1)).date().isoformat(),
        "awareness_at": aware.isoformat(),
    }
    with httpx.Client() as client:

        def post(payload: dict[str, Any]) -> None:
            posted = post_signed(client, stack.url("ingest"), "edc", stack.secret, payload, now=now)
            assert posted.status == 202, posted.body

        post(event("ae", "ae-retract-1-v1", ae))
        settle_mails(catcher, len(RECIPIENTS))
        assert all("SAE report due" in str(m["Subject"]) for m in catcher.messages())

        post(
            event(
                "status",
                "ae-retract-1-eie",
                {
                    "record_type": "ae",
                    "record_id": "AE-RETRACT-1",
                    "status": "entered_in_error",
                    "reason": "entered for the wrong subject",
                    # after the version reached us: a version received after the retraction asks the site about it
                    "changed_at": datetime.now(UTC).isoformat(),
                },
            )
        )
        settle_mails(catcher, 2 * len(RECIPIENTS))
        withdrawn = [m for m in catcher.messages() if "SAE withdrawn, no report needed" in str(m["Subject"])]
        assert sorted(str(m["To"]) for m in withdrawn) == RECIPIENTS
        alert = sae_alert(stack)
        [obligation] = alert["obligations"]
        assert (alert["state"], obligation["state"], obligation["cancelled_by"]) == ("resolved", "cancelled", "system")
        assert "entered for the wrong subject" in str(obligation["cancel_reason"])

        post(
            event(
                "status",
                "ae-retract-1-restored",
                {
                    "record_type": "ae",
                    "record_id": "AE-RETRACT-1",
                    "status": "restored",
                    "changed_at": datetime.now(UTC).isoformat(),
                },
            )
        )
        settle_mails(catcher, 3 * len(RECIPIENTS))
    alert = sae_alert(stack)
    [obligation] = alert["obligations"]
    due = (aware + timedelta(hours=24)).replace(microsecond=0)
    assert alert["state"] == "open" and obligation["state"] == "open"
    assert datetime.fromisoformat(str(obligation["due_at"])).replace(microsecond=0) == due, "the original deadline"
    again = [m for m in catcher.messages()[-len(RECIPIENTS) :] if "SAE report due" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in again) == RECIPIENTS
