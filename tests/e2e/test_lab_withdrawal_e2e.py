"""End to end, on real processes, broker and SMTP: a grade 4 count the site then marks entered in error.

Signed webhook (platelets 20 x 10^9/L) -> the lab page with its review clock; the site's "entered in error" -> the
review cancelled, the alert resolved, and one "lab finding withdrawn, no review needed" mail to each paged contact.
Before, the review stayed open and escalated for a result the site had taken back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import post_signed
from tests.e2e.stack import Stack
from tests.e2e.test_sae_withdrawal_e2e import event
from tests.e2e.test_webhook_to_mail import alerts, settle_mails
from tests.polling import wait_for

pytestmark = pytest.mark.e2e


def test_a_paged_count_entered_in_error_withdraws_its_finding_end_to_end(stack: Stack, catcher: MailCatcher) -> None:
    for service in ("ingest", "safety", "notify"):
        stack.start(service)
    for service in ("ingest", "safety", "notify"):
        stack.wait_ready(service)
    now = datetime.now(UTC)
    count = {
        "result_id": "PLT-E2E-1",
        "test": "PLAT",
        "value": "20",
        "unit": "10^9/L",
        "lln": "150",
        "uln": "400",
        "collected_at": (now - timedelta(hours=3)).isoformat(),
    }
    with httpx.Client() as client:

        def post(payload: dict[str, Any]) -> None:
            posted = post_signed(client, stack.url("ingest"), "edc", stack.secret, payload, now=now)
            assert posted.status == 202, posted.body

        post(event("lab", "plt-e2e-1", count))
        wait_for(lambda: len(catcher.messages()) >= 1, timeout=60, what="the lab page")
        pages = [m for m in catcher.messages() if "Platelet count decreased" in str(m["Subject"])]
        assert pages, [str(m["Subject"]) for m in catcher.messages()]
        settle_mails(catcher, len(pages))
        post(
            event(
                "status",
                "plt-e2e-1-eie",
                {
                    "record_type": "lab",
                    "record_id": "PLT-E2E-1",
                    "status": "entered_in_error",
                    "reason": "another patient's sample",
                    "changed_at": datetime.now(UTC).isoformat(),
                },
            )
        )
        settle_mails(catcher, 2 * len(pages))
    withdrawn = [m for m in catcher.messages() if "Lab finding withdrawn, no review needed" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in withdrawn) == sorted(str(m["To"]) for m in pages)
    assert "another patient's sample" in withdrawn[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [alert] = [a for a in alerts(stack) if a["kind"] == "lab_toxicity"]
    assert alert["state"] == "resolved"
    obligations: list[dict[str, Any]] = alert["obligations"]  # type: ignore[assignment]
    assert [o["state"] for o in obligations] == ["cancelled"]
