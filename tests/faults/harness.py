"""What the fault scenarios share: an EDC that retries like a real one, SAE streams, the count of effects.

An *effect* here is what a person would notice: an SAE alert in notify, and an SAE page (one mail to one
contact about one subject's SAE). A page is *lost* when it never arrived and nothing in the database would
still send it, *late* when it did not arrive within the scenario but its delivery is still pending (a lease
held by a killed process: sent minutes later), *duplicated* when it arrived as two different messages (two
Message-IDs: the contact sees it twice). A re-sent copy with the same Message-ID is counted apart: mail
clients merge it. SAE deliveries still pending at the end are *unsettled*; one whose mail the server
already has will be sent again when its lease ends.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from services.devstack.mail_catcher import MailCatcher
from shared.webhook_signatures import WebhookSecret, signature_headers
from tests.e2e.stack import Stack
from tests.polling import wait_for

TRIAL = "NCT07212335"
RECIPIENTS = ("medical.monitor@sentinel.example", "safety.officer@sentinel.example")
SETTLE_SECONDS = 3.0  # after the expected pages arrived, how long a duplicate gets to show up


@dataclass
class Outcome:
    """One scenario's row in the printed report."""

    scenario: str
    saes: int = 0
    pages_expected: int = 0
    pages_delivered: int = 0
    duplicated_pages: int = 0
    resent_same_message_id: int = 0
    alerts_lost: int = 0
    alerts_duplicated: int = 0
    unsettled_deliveries: int = 0
    unsettled_already_mailed: int = 0
    missing_pages: set[tuple[str, str]] = field(default_factory=set)  # (contact, subject) never mailed
    held_pages: set[tuple[str, str]] = field(default_factory=set)  # of those, still pending in the database
    answers: Counter[str] = field(default_factory=Counter)
    page_latency: list[float] = field(default_factory=list)
    bulk_before_last_page: int | None = None
    seconds: float = 0.0
    depends_on: str = ""
    note: str = ""

    @property
    def lost_pages(self) -> int:
        """Never mailed, and nothing left in the database that would mail them."""
        return len(self.missing_pages - self.held_pages)

    @property
    def late_pages(self) -> int:
        """Not mailed within the scenario, but still pending (leased by a killed process, or retrying)."""
        return len(self.missing_pages & self.held_pages)

    @property
    def server_errors(self) -> int:
        """5xx answers other than 503: a client's retry is right, but the service did not say why."""
        return sum(n for status, n in self.answers.items() if status.startswith("5") and status != "503")

    @property
    def problems(self) -> list[str]:
        found = []
        if self.lost_pages:
            found.append(f"{self.lost_pages} SAE page(s) lost")
        if self.late_pages:
            found.append(f"{self.late_pages} SAE page(s) not sent within the scenario, still pending")
        if self.duplicated_pages:
            found.append(f"{self.duplicated_pages} SAE page(s) duplicated")
        if self.alerts_lost or self.alerts_duplicated:
            found.append(f"alerts: {self.alerts_lost} lost, {self.alerts_duplicated} duplicated")
        if self.unsettled_deliveries:
            found.append(
                f"{self.unsettled_deliveries} SAE deliver(ies) still pending at the end, "
                f"{self.unsettled_already_mailed} of them already in the mailbox (a duplicate once their lease ends)"
            )
        if self.server_errors:
            found.append(f"{self.server_errors} webhook answer(s) 5xx other than 503")
        return found

    def latency_text(self) -> str:
        if not self.page_latency:
            return "-"
        worst = max(self.page_latency)
        return f"p50 {statistics.median(self.page_latency):.1f}s max {worst:.1f}s"


class Edc:
    """Posts signed events and retries like an EDC: on 5xx, 429 and connection errors, honouring
    Retry-After (capped, to keep the suite short), until a deadline. Records every answer."""

    def __init__(self, url: str, secret: str, answers: Counter[str], *, retry_cap: float = 1.0) -> None:
        self._url = url
        self._secret = WebhookSecret.parse(secret)
        self._answers = answers
        self._retry_cap = retry_cap
        self._lock = threading.Lock()

    def post(self, event: dict[str, Any], *, deadline_seconds: float = 120.0) -> int:
        body = json.dumps(event).encode()
        msg_id = "msg_" + secrets.token_hex(8)  # one delivery id for all retries of this event
        give_up = time.monotonic() + deadline_seconds
        with httpx.Client(timeout=30) as client:
            while True:
                now = int(time.time())
                headers = {**signature_headers(self._secret, msg_id, now, body), "content-type": "application/json"}
                try:
                    response = client.post(f"{self._url}/v1/sources/edc/events", content=body, headers=headers)
                    status, wait = str(response.status_code), _retry_after(response)
                except httpx.TransportError:
                    status, wait = "connection refused or reset", 0.3
                with self._lock:
                    self._answers[status] += 1
                if status.startswith("2") or (status.startswith("4") and status != "429"):
                    return int(status)
                if time.monotonic() > give_up:
                    raise AssertionError(f"event {event['id']} was never accepted; last answer {status}")
                time.sleep(min(wait, self._retry_cap))


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", "1"))
    except ValueError:
        return 1.0


def sae_event(subject: str, now: datetime) -> dict[str, Any]:
    """A first report that is already serious (hospitalisation): one SAE alert, one page per contact."""
    return {
        "id": f"{subject}-ae-1-v1",
        "type": "ae",
        "study": TRIAL,
        "site": subject.split("-")[0],
        "subject": subject,
        "data": {
            "ae_id": "AE-1",
            "version": 1,
            "term": "Pneumonia",
            "ctcae_term": "Lung infection",
            "grade": 3,
            "serious": True,
            "seriousness": {"hospitalization": True},
            "relatedness": "possible",
            "onset": (now - timedelta(days=1)).date().isoformat(),
            "awareness_at": (now - timedelta(hours=1)).isoformat(),
        },
    }


class Stream:
    """Posts events one after another in a background thread, so a fault can strike in the middle."""

    def __init__(self, edc: Edc, events: list[dict[str, Any]]) -> None:
        self.accepted = 0
        self.statuses: list[int] = []
        self._edc = edc
        self._events = events
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for event in self._events:
                self.statuses.append(self._edc.post(event))
                self.accepted += 1
        except BaseException as exc:
            self._error = exc

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(timeout=180)

    def wait_accepted(self, count: int, timeout: float = 60) -> None:
        wait_for(lambda: self.accepted >= count or self._error is not None, timeout=timeout, what=f"{count} accepted")

    def finish(self, timeout: float = 180) -> None:
        self._thread.join(timeout=timeout)
        if self._error is not None:
            raise self._error
        assert not self._thread.is_alive(), "the stream did not finish"


class ArrivalLog:
    """The mail catcher's callback: when each message arrived, and an optional action on an SAE page."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, Path]] = []
        self.on_sae_page: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def __call__(self, path: Path, _envelope: Any) -> None:
        with self._lock:
            self.arrivals.append((time.monotonic(), path))
        action, self.on_sae_page = self.on_sae_page, None
        if action is not None and b"SAE report due" in path.read_bytes():
            action()
        elif action is not None:
            self.on_sae_page = action


def sae_pages(messages: list[EmailMessage]) -> dict[tuple[str, str], list[str]]:
    """(contact, subject) -> the Message-IDs of every SAE page that reached them."""
    pages: dict[tuple[str, str], list[str]] = defaultdict(list)
    for message in messages:
        title = str(message["Subject"])
        if "SAE report due" not in title:
            continue
        subject = title.rsplit("subject ", 1)[-1].strip()
        pages[(str(message["To"]), subject)].append(str(message["Message-ID"]))
    return pages


def count_pages(outcome: Outcome, catcher: MailCatcher, subjects: list[str], *, timeout: float) -> None:
    """Wait (bounded) for every expected page, then a little longer for duplicates; fill in the counts."""
    expected = {(to, s) for s in subjects for to in RECIPIENTS}
    outcome.pages_expected = len(expected)

    def delivered() -> int:
        return len(expected & set(sae_pages(catcher.messages())))

    with suppress(AssertionError):  # a page that never came is counted as lost below, and reported
        wait_for(lambda: delivered() >= len(expected), timeout=timeout, interval=0.25, what="every SAE page")
    wait_for_quiet(catcher, SETTLE_SECONDS)
    pages = sae_pages(catcher.messages())
    outcome.pages_delivered = len(expected & set(pages))
    outcome.missing_pages = expected - set(pages)
    outcome.duplicated_pages = sum(1 for ids in pages.values() if len(set(ids)) > 1)
    outcome.resent_same_message_id = sum(len(ids) - len(set(ids)) for ids in pages.values())


def wait_for_quiet(catcher: MailCatcher, seconds: float) -> None:
    """Return once no new mail arrived for `seconds` (a bounded wait for stragglers and duplicates)."""
    seen, since = len(catcher.paths()), time.monotonic()
    limit = time.monotonic() + 10 * seconds
    while time.monotonic() - since < seconds and time.monotonic() < limit:
        time.sleep(0.2)
        now_seen = len(catcher.paths())
        if now_seen != seen:
            seen, since = now_seen, time.monotonic()


def count_alerts(outcome: Outcome, stack: Stack, subjects: list[str], *, service: str = "notify") -> None:
    response = httpx.get(
        stack.url(service) + "/v1/alerts",
        params={"limit": 1000},
        headers={"authorization": f"Bearer {stack.token}"},
        timeout=10,
    )
    response.raise_for_status()
    per_subject = Counter(str(a["subject_id"]) for a in response.json() if a["kind"] == "sae")
    outcome.alerts_lost = sum(1 for s in subjects if per_subject[s] == 0)
    outcome.alerts_duplicated = sum(n - 1 for n in per_subject.values() if n > 1)


def pending_sae_deliveries(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = (
                "select count(*) from notify_deliveries d join notify_alerts a on a.id = d.alert_id"
                " where d.status = 'pending' and a.kind = 'sae'"
            )
            return int(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def wait_for_leases(database_url: str, *, lease_seconds: float) -> None:
    """Give a killed sender's leased deliveries the one lease they may wait to be retaken (bounded: what is
    still pending after it is counted, and reported, by `count_unsettled`)."""
    with suppress(AssertionError):
        wait_for(
            lambda: pending_sae_deliveries(database_url) == 0,
            timeout=lease_seconds + 10,
            interval=0.5,
            what="the killed sender's leased deliveries to be retaken",
        )


def count_unsettled(outcome: Outcome, database_url: str, catcher: MailCatcher) -> None:
    """SAE deliveries not recorded as sent; and of those, how many the mail server already has (the send
    happened, recording it did not: it will be sent again when the lease ends)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            pending = connection.execute(
                text(
                    "select d.id, d.recipient, a.subject_id from notify_deliveries d"
                    " join notify_alerts a on a.id = d.alert_id where d.status = 'pending' and a.kind = 'sae'"
                )
            ).all()
    finally:
        engine.dispose()
    ids = {str(row[0]) for row in pending}
    outcome.held_pages = {(str(row[1]), str(row[2])) for row in pending}
    mailed = {str(m["X-Sentinel-Delivery"]) for m in catcher.messages()}
    outcome.unsettled_deliveries = len(ids)
    outcome.unsettled_already_mailed = len(ids & mailed)


def kill(stack: Stack, name: str) -> None:
    """kill -9: no shutdown hook runs, no transaction is finished, no lease is given back."""
    process = stack.processes[name]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@contextmanager
def timed(outcome: Outcome) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        outcome.seconds = time.monotonic() - started


def utcnow() -> datetime:
    return datetime.now(UTC)
