"""The officer console in a real headless Chromium (Debian's package, driven by Playwright), on the real stack:
sign in, a new SAE appears with its countdown, the mail's link opens its page, acknowledge, record the filed
report, confirm the suspected DLT and watch the cohort board change. A viewer sees no buttons and is refused;
a form without its CSRF token is refused; no page is served without a session. Screenshots go to
var/screenshots/ (phone width), where the README's pictures come from."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright import sync_api as playwright_sync

from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import post_signed, scenario_events
from tests.e2e.stack import SENTINEL, Stack, free_port
from tests.polling import wait_for

pytestmark = pytest.mark.e2e
TRIAL = "NCT07212335"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium, installed by scripts/ensure-chromium.sh (run-tests.sh calls it); never a download."""
    found = os.environ.get("SENTINEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        result = subprocess.run([str(ROOT / "scripts" / "ensure-chromium.sh")], capture_output=True, text=True)
        found = result.stdout.strip() or None
    if found is None:
        pytest.fail("no chromium: run scripts/ensure-chromium.sh (apt-get install -y chromium)")
    return found


class ConsoleStack(Stack):
    """The three services, plus the console pointed at their APIs; notify links mails to the console."""

    def __init__(self, root: Path, **kwargs: object) -> None:
        super().__init__(root, **kwargs)  # type: ignore[arg-type]
        self.viewer_token = "e2e-viewer-" + uuid.uuid4().hex
        self.ports["console"] = free_port()
        tokens = {
            self.token: {"user": "dr.e2e", "role": "officer"},
            self.viewer_token: {"user": "sponsor.viewer", "role": "viewer"},
        }
        self.env.update(
            {
                "SENTINEL_API_TOKENS": json.dumps(tokens),
                "SENTINEL_CONSOLE_PORT": str(self.ports["console"]),
                "SENTINEL_CONSOLE_URL": self.url("console"),
                "SENTINEL_NOTIFY_API_URL": self.url("notify"),
                "SENTINEL_SAFETY_API_URL": self.url("safety"),
            }
        )

    def start_console(self) -> None:
        log = open(self.root / "console.log", "ab")  # noqa: SIM115 - handed to the child process
        self.processes["console"] = subprocess.Popen(
            [SENTINEL, "run", "console", "--log-level", "warning"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()


@pytest.fixture
def stack(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, catcher: MailCatcher) -> Iterator[ConsoleStack]:
    running = ConsoleStack(tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, smtp_port=catcher.port)
    try:
        for service in ("ingest", "safety", "notify"):
            running.start(service)
        running.start_console()
        for service in ("ingest", "safety", "notify", "console"):
            running.wait_ready(service)
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def shot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def sign_in(page: object, base: str, token: str) -> None:
    page.goto(f"{base}/console/inbox")  # type: ignore[attr-defined]
    assert "/console/login" in page.url  # type: ignore[attr-defined]
    page.get_by_label("API token").fill(token)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*/console/inbox$"))  # type: ignore[attr-defined]


def test_officer_works_an_sae_and_a_dlt_from_the_console(
    stack: ConsoleStack, catcher: MailCatcher, browser: object
) -> None:
    base = stack.url("console")
    # No page without a session: the inbox redirects to the sign-in page, and so does an action.
    anonymous = httpx.get(f"{base}/console/inbox", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/console/login")
    assert httpx.post(f"{base}/console/alerts/x/ack", follow_redirects=False).status_code == 303

    context = browser.new_context(viewport=PHONE, device_scale_factor=1)  # type: ignore[attr-defined]
    page = context.new_page()
    sign_in(page, base, stack.token)
    cookie = next(c for c in context.cookies() if c["name"] == "sentinel_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.get_by_text("Nothing is due").is_visible()

    now = datetime.now(UTC)
    with httpx.Client(timeout=20) as client:
        for event in scenario_events(TRIAL, now):
            assert post_signed(client, stack.url("ingest"), "edc", stack.secret, event, now=now).status in (200, 202)

    def sae_listed() -> bool:
        page.reload()
        return page.locator(".item.kind-sae").count() > 0

    try:
        wait_for(sae_listed, timeout=60, interval=0.5, what="the SAE in the inbox")
    except AssertionError:
        raise AssertionError(page.content()[:3000] + stack.log("console")[-3000:]) from None
    sae = page.locator(".item.kind-sae").first
    clock = sae.locator(".clock").first
    assert re.fullmatch(r"(2[0-3]|1?\d) h \d\d min left", clock.inner_text()), clock.inner_text()
    assert "overdue" not in (clock.get_attribute("class") or "")
    wait_for(lambda: (page.reload() or True) and page.locator(".item.kind-dlt").count() > 0, timeout=30, what="DLT")
    shot(page, "inbox")

    # The mail links to the alert's page in the console; the officer follows it.
    def sae_mail_link() -> str | None:
        for message in catcher.messages():
            if "SAE" in str(message["Subject"]):
                text = message.get_body(preferencelist=("plain",)).get_content()
                found = re.search(rf"{re.escape(base)}/console/alerts/\S+", text)
                return found.group(0) if found else None
        return None

    link = wait_for(sae_mail_link, timeout=30, what="the SAE mail with its console link")
    page.goto(link)
    assert page.locator("h1").inner_text().startswith("SAE:")
    shot(page, "alert")
    # Accessible: every field has a label; the first Tab reaches the skip link.
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => !(e.labels && e.labels.length)).map(e => e.name)"
    )
    assert unlabelled == []
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_role("button", name="Acknowledge").first.click()
    assert "Acknowledged" in page.locator(".flash").inner_text()
    assert page.locator(".badge.state-acknowledged").count() > 0
    page.get_by_label("Filed report reference").fill("CIOMS-2026-0042")
    page.get_by_role("button", name="Record filed report").click()
    assert "CIOMS-2026-0042" in page.locator(".flash").inner_text()
    assert page.get_by_text("Filed as CIOMS-2026-0042 by dr.e2e").is_visible()
    trail = page.locator(".audit").inner_text()
    assert "dr.e2e acknowledged" in trail and "report filed" in trail

    # The cohort board before and after the DLT is confirmed.
    page.goto(f"{base}/console/cohorts")
    arm_a = page.locator('[data-arm="A"]')
    assert arm_a.locator('[data-count="dlt_suspected"]').inner_text() == "1"
    assert arm_a.locator('[data-count="dlt_confirmed"]').inner_text() == "0"
    page.goto(f"{base}/console/dlts")
    card = page.locator("article.dlt").first
    assert card.locator(".clock").count() == 1
    shot(page, "dlt-queue")
    card.get_by_label("Reason (kept in the audit trail)").fill("Grade 3 infusion reaction with hypotension: DLT")
    card.get_by_role("button", name="Confirm DLT").click()
    assert "confirmed" in page.locator(".flash").inner_text()

    def confirmed_on_board() -> bool:
        page.goto(f"{base}/console/cohorts")
        return page.locator('[data-arm="A"] [data-count="dlt_confirmed"]').inner_text() == "1"

    wait_for(confirmed_on_board, timeout=30, interval=0.5, what="the confirmed DLT on the cohort board")
    assert page.locator('[data-arm="A"] [data-count="dlt_suspected"]').inner_text() == "0"
    shot(page, "cohorts")

    # The review committee re-adjudicates: the officer revises the decision on the DLT's page, on purpose.
    officer = {"authorization": f"Bearer {stack.token}"}
    dlt_id = httpx.get(f"{stack.url('safety')}/v1/trials/{TRIAL}/dlts", headers=officer).json()[0]["dlt_id"]
    page.goto(f"{base}/console/dlts/{dlt_id}")
    assert page.get_by_role("button", name="Reject: not a DLT").is_hidden(), "behind 'Revise this decision'"
    page.get_by_text("Revise this decision").click()
    page.get_by_label("Reason for the revision (kept in the audit trail)").fill(
        "SRC 2026-03-20: hypotension from sepsis, not the infusion"
    )
    shot(page, "dlt-revise")
    page.get_by_role("button", name="Reject: not a DLT").click()
    assert "decision revised" in page.locator(".flash").inner_text()
    trail = page.locator(".audit").inner_text()
    assert "dlt.revised to rejected (was confirmed): SRC 2026-03-20" in trail, trail
    page.goto(f"{base}/console/cohorts")
    assert page.locator('[data-arm="A"] [data-count="dlt_confirmed"]').inner_text() == "0"

    page.goto(f"{base}/console/subjects/101-001")
    assert page.locator("svg.plot").count() == 3
    assert page.locator(".ev-infusion").count() == 1 and page.locator(".ev.in-window").count() > 0
    shot(page, "subject")
    page.set_viewport_size({"width": 1100, "height": 1300})
    page.screenshot(path=str(SCREENSHOTS / "subject-desktop.png"))
    page.set_viewport_size(PHONE)
    page.goto(f"{base}/console/listings/ae")
    assert page.locator("table.listing tbody tr").count() == 1
    shot(page, "listing")
    with page.expect_download() as download:
        page.get_by_role("link", name="XLSX").click()
    assert download.value.suggested_filename.endswith(".xlsx")

    # CSRF: the same officer's session, a form without its token, is refused and changes nothing.
    alert_id = link.rsplit("/", 1)[1]
    refused = context.request.post(f"{base}/console/alerts/{alert_id}/comment", form={"text": "forged"})
    assert refused.status == 403
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/console/login$"))
    context.close()

    # A viewer sees the alert but no button, and a well-formed POST from their session is refused.
    viewer = browser.new_context(viewport=PHONE)  # type: ignore[attr-defined]
    vpage = viewer.new_page()
    sign_in(vpage, base, stack.viewer_token)
    vpage.goto(link)
    assert vpage.get_by_role("button", name="Acknowledge").count() == 0
    assert vpage.get_by_role("button", name="Add comment").count() == 0
    csrf = vpage.locator("form.signout input[name=csrf_token]").get_attribute("value")
    denied = viewer.request.post(f"{base}/console/alerts/{alert_id}/comment", form={"text": "hi", "csrf_token": csrf})
    assert denied.status == 403
    viewer.close()
    history = httpx.get(
        f"{stack.url('notify')}/v1/alerts/{alert_id}", headers={"authorization": f"Bearer {stack.token}"}
    ).json()["history"]
    assert not any(h["action"] == "commented" for h in history)


def test_a_withdrawn_lab_finding_reads_as_such_on_a_phone(
    stack: ConsoleStack, catcher: MailCatcher, browser: object
) -> None:
    """A grade 4 platelet count paged, then marked entered in error by the site: the alert's page says the grade no
    longer stands and why, its review cancelled, with no button left to act on a review that is not owed."""
    base = stack.url("console")
    now = datetime.now(UTC)
    count = {
        "result_id": "PLT-UI-1",
        "test": "PLAT",
        "value": "20",
        "unit": "10^9/L",
        "lln": "150",
        "uln": "400",
        "collected_at": now.isoformat(),
    }
    retraction = {
        "record_type": "lab",
        "record_id": "PLT-UI-1",
        "status": "entered_in_error",
        "reason": "another patient's sample",
        "changed_at": now.isoformat(),
    }
    with httpx.Client(timeout=20) as client:
        for event_id, kind, data in (("plt-ui-1", "lab", count), ("plt-ui-1-eie", "status", retraction)):
            event = {"id": event_id, "type": kind, "study": TRIAL, "site": "101", "subject": "101-007", "data": data}
            assert post_signed(client, stack.url("ingest"), "edc", stack.secret, event, now=now).status == 202
            if kind == "lab":
                wait_for(lambda: len(catcher.messages()) > 0, timeout=60, what="the lab page")

    def withdrawn_alert() -> str | None:
        listed = httpx.get(f"{stack.url('notify')}/v1/alerts", headers={"authorization": f"Bearer {stack.token}"})
        found = [a for a in listed.json() if a["kind"] == "lab_toxicity" and "no longer stands" in a["title"]]
        return str(found[0]["id"]) if found else None

    alert_id = wait_for(withdrawn_alert, timeout=60, what="the lab alert withdrawn")
    context = browser.new_context(viewport=PHONE)  # type: ignore[attr-defined]
    page = context.new_page()
    sign_in(page, base, stack.token)
    page.goto(f"{base}/console/alerts/{alert_id}")
    heading = page.locator("h1").inner_text()
    assert "Platelet count decreased" in heading and "grade 4 no longer stands" in heading, heading
    body = page.locator("main").inner_text()
    assert "another patient's sample" in body and "lab finding withdrawn" in body.lower(), body[:2000]
    assert page.get_by_role("button", name="Record review").count() == 0
    shot(page, "lab-withdrawn")
    context.close()
