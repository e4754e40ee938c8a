"""Webhook 202 -> mail received, end to end: `python -m bench.bench_pipeline`.

Migrates the schema (`sentinel db upgrade`, as a deployment's Job does), starts ingest, safety and notify as
processes (`sentinel run`, SQLite, fresh topics, `SENTINEL_AUTO_MIGRATE=false`) and a mail catcher, then
measures, for serious AEs, the time from ingest's 202 to the first mail about them:

- baseline: one SAE at a time on an idle system;
- under load: canonical events posted at SENTINEL_BENCH_RATES events/s (default 50,200,500) for
  SENTINEL_BENCH_SECONDS seconds (default 10), ~2% of them SAEs (posted alone), the rest labs and minor AEs
  in small batches from a few sites;
- during a backfill: SENTINEL_BENCH_BACKFILL_ROWS SDTM LB rows (default 100,000) posted as CSV in requests
  of 25,000 rows, and from the first accepted request on, an SAE and a grade-4 platelet count (each posted on its
  own, as a site enters them) every 2 s while safety drains it. The extract's
  platelet counts span the trial's cytopenic range (about one row in nine grade 3 or 4), as a backfill of this
  population would: safety raises lab signals from it, and notify handles them while the SAEs come in.
It also prints the resident memory of each service idle and after the load. SENTINEL_BENCH_SERVICE_ENV (a JSON
object) adds settings to the services' environment, e.g. '{"SENTINEL_SAFETY_SWEEP_SECONDS": "3600"}'.
Targets: p99 < 1 s at 200 events/s; an SAE or a grade >= 3 finding during the 100k backfill mailed in < 5 s;
<= 150 MB RSS each.
"""

from __future__ import annotations

import asyncio
import csv
import email.policy
import io
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.harness import BOOTSTRAP, env_int, env_list, rss_mb
from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import new_webhook_secret
from shared.kafka import delete_topics
from shared.webhook_signatures import WebhookSecret, signature_headers

TRIAL = "NCT07212335"
SENTINEL = str(Path(sys.executable).with_name("sentinel"))
SERVICES = ("ingest", "safety", "notify")
PORT_ENV = {"ingest": "SENTINEL_INGEST_PORT", "safety": "SENTINEL_SAFETY_PORT", "notify": "SENTINEL_NOTIFY_PORT"}
BACKFILL_TOKEN = "bench-backfill-" + secrets.token_hex(12)
BACKFILL_CHUNK = 25_000
RSS_SETTLE_SECONDS = 3
SAE_SUBJECT = re.compile(r"SAE report due.*subject (SAE-[0-9a-f]+)")
LAB_SUBJECT = re.compile(r"grade 4.*subject (LAB-[0-9a-f]+)")


class Mailbox:
    """Arrival time of the first mail about each SAE subject, and about each live grade-4 lab's subject."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self._lock = threading.Lock()

    def on_message(self, path: Path, _envelope: Any) -> None:
        arrived = time.perf_counter()
        message = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes(), headersonly=True)
        subject = " ".join(str(message["Subject"] or "").split())
        found = SAE_SUBJECT.search(subject) or LAB_SUBJECT.search(subject)
        if found:
            with self._lock:
                self.first.setdefault(found.group(1), arrived)
        path.unlink()


class Stack:
    """The three services as processes on fresh topics, one SQLite folder, and the mail catcher."""

    def __init__(self, root: Path, smtp_port: int) -> None:
        self.root = root
        self.secret = new_webhook_secret()
        prefix = self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        sources = {
            "sources": {
                "backfill": {
                    "kind": "sdtm",
                    "trial": TRIAL,
                    "auth": {"scheme": "bearer", "secret": BACKFILL_TOKEN},
                    "max_body_bytes": 200_000_000,
                }
            }
        }
        (root / "sources.yaml").write_text(yaml.safe_dump(sources))
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        self.ports = {name: _free_port() for name in SERVICES}
        self.env = {
            **clean,
            "SENTINEL_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "SENTINEL_CLINICAL_TOPIC": f"{prefix}.clinical",
            "SENTINEL_SIGNALS_TOPIC": f"{prefix}.signals",
            "SENTINEL_VAR_DIR": str(root / "var"),
            "SENTINEL_SAFETY_GROUP_ID": f"{prefix}-safety",
            "SENTINEL_NOTIFY_GROUP_ID": f"{prefix}-notify",
            "SENTINEL_WEBHOOK_SECRETS": json.dumps({"edc": self.secret}),
            "SENTINEL_SOURCES_PATH": str(root / "sources.yaml"),
            "SENTINEL_SMTP_PORT": str(smtp_port),
            "SENTINEL_DISPATCH_POLL_SECONDS": "0.2",
            "SENTINEL_AUTO_MIGRATE": "false",
            **{env: str(self.ports[name]) for name, env in PORT_ENV.items()},
            **json.loads(os.environ.get("SENTINEL_BENCH_SERVICE_ENV", "{}")),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self) -> None:
        # As a deployment runs them: the schema migrated first (the Kubernetes Job), then the services, which
        # only check it (and so never load Alembic).
        subprocess.run([SENTINEL, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        for name in SERVICES:
            with open(self.root / f"{name}.log", "ab") as log:
                self.processes[name] = subprocess.Popen(
                    [SENTINEL, "run", name, "--log-level", "warning"], env=self.env, stdout=log, stderr=log
                )
        deadline = time.monotonic() + 90
        for name in SERVICES:
            while True:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}")
                try:
                    if httpx.get(self.url(name) + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready")
                time.sleep(0.2)

    def rss(self) -> dict[str, float]:
        return {name: rss_mb(process.pid) for name, process in self.processes.items()}

    def processed(self, service: str) -> float:
        text = httpx.get(self.url(service) + "/metrics", timeout=10).text
        pattern = rf'^sentinel_{service}_events_processed_total{{outcome="(processed|duplicate)"}} (\S+)$'
        return sum(float(m.group(2)) for m in re.finditer(pattern, text, re.MULTILINE))

    def page_wait(self) -> tuple[float, float]:
        """Notify's pages (critical and others) so far: (seconds from queued to handed over, summed; how many)."""
        text = httpx.get(self.url("notify") + "/metrics", timeout=10).text
        found = {}
        for part in ("sum", "count"):
            classes = "critical|live_finding|page"
            pattern = rf'^sentinel_notify_delivery_wait_seconds_{part}{{urgency="(?:{classes})"}} (\S+)$'
            found[part] = sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))
        return found["sum"], found["count"]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def canonical(event_id: str, kind: str, subject: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "study": TRIAL, "site": "101", "subject": subject, "data": data}


def sae_event(tag: str, now: datetime) -> dict[str, Any]:
    data = {
        "ae_id": "SAE-1",
        "version": 1,
        "term": "Pneumonitis",
        "grade": 3,
        "serious": True,
        "seriousness": {"hospitalization": True},
        "relatedness": "possible",
        "onset": str(now.date()),
        "awareness_at": now.isoformat(),
    }
    return canonical(f"sae-{tag}", "ae", f"SAE-{tag}", data)


def grade4_lab_event(tag: str, now: datetime) -> dict[str, Any]:
    """A platelet count of 12 x10^9/L (CTCAE grade 4) posted on its own, as a site enters it."""
    lab = {"result_id": f"R-{tag}", "test": "PLAT", "value": "12", "unit": "10^9/L", "lln": "150", "uln": "400"}
    return canonical(f"lab-{tag}", "lab", f"LAB-{tag}", {**lab, "collected_at": now.isoformat()})


def background_event(run: str, n: int, subjects: int, now: datetime) -> dict[str, Any]:
    subject = f"BG-{n % subjects:04d}"
    if n % 40 == 0:
        data = {"ae_id": f"AE-{n}", "version": 1, "term": "Fatigue", "grade": 1, "serious": False}
        return canonical(f"bg-{run}-{n}", "ae", subject, data)
    at = (now - timedelta(minutes=n % 600)).isoformat()
    value = str(150 + (n * 37) % 250)
    lab = {"result_id": f"R-{run}-{n}", "test": "PLAT", "value": value, "unit": "10^9/L", "lln": "150", "uln": "400"}
    return canonical(f"bg-{run}-{n}", "lab", subject, {**lab, "collected_at": at})


@dataclass(frozen=True)
class Timing:
    """Two instants of one post (perf_counter seconds), or two durations to a mail."""

    sent: float
    acked: float


class Poster:
    def __init__(self, client: httpx.AsyncClient, stack: Stack) -> None:
        self.client = client
        self.stack = stack

    async def post(self, payload: dict[str, Any]) -> Timing:
        """Post signed canonical JSON; when it was sent and when the 202 came back.

        A connection the server closed as it was reused is retried: ingest is idempotent by event id, so a
        retry of a post that did arrive is answered 200 (duplicate), which counts as accepted.
        """
        body = json.dumps(payload).encode()
        url = f"{self.stack.url('ingest')}/v1/sources/edc/events"
        sent = time.perf_counter()
        for attempt in range(3):
            now = int(time.time())
            secret = WebhookSecret.parse(self.stack.secret)
            headers = signature_headers(secret, "msg_" + secrets.token_hex(8), now, body)
            headers["content-type"] = "application/json"
            try:
                response = await self.client.post(url, content=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if attempt == 2:
                    raise
                continue
            if response.status_code == 202 or (attempt and response.status_code == 200):
                return Timing(sent, time.perf_counter())
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:300]}")
        raise AssertionError("unreachable")


def tag_key(tag: str) -> str:
    return f"SAE-{tag}"


def lab_key(tag: str) -> str:
    return f"LAB-{tag}"


async def sae_latencies(
    poster: Poster, mailbox: Mailbox, tags: list[str], accepted: dict[str, Timing], key: Callable[[str], str] = tag_key
) -> list[Timing]:
    """Wait (up to 2 minutes) for the mails of these SAEs (or labs, by `key`); (post -> mail, 202 -> mail) in
    seconds, inf if none came.

    202 -> mail can be below zero: the mail may arrive before ingest's answer does, when ingest is busy.
    """
    await wait_until(lambda: all(key(t) in mailbox.first for t in tags), interval=0.02, limit=120)
    arrived = {t: mailbox.first.get(key(t), float("inf")) for t in tags}
    return [Timing(arrived[t] - accepted[t].sent, arrived[t] - accepted[t].acked) for t in tags]


async def wait_until(done: Callable[[], bool], *, interval: float, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while True:
        if done():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def idle_baseline(poster: Poster, mailbox: Mailbox, count: int) -> list[Timing]:
    latencies = []
    for _ in range(count):
        tag = uuid.uuid4().hex[:10]
        accepted = {tag: await poster.post(sae_event(tag, datetime.now(UTC)))}
        latencies += await sae_latencies(poster, mailbox, [tag], accepted)
    return latencies


@dataclass(frozen=True)
class Stages:
    """Where the time went in one step: how far safety was behind when the posting ended, and notify's part."""

    posted: int
    safety_behind: float
    safety_rate: float
    page_wait: float  # mean seconds from a page's queueing (notify's commit) to its hand-over to SMTP

    def line(self) -> str:
        return (
            f"safety {self.safety_rate:,.0f} events/s, {max(self.safety_behind, 0):,.0f} of {self.posted:,} events "
            f"behind when the posting ended; notify queued -> SMTP {self.page_wait * 1000:.0f} ms (mean, pages)"
        )


async def measured(
    stack: Stack, poster: Poster, mailbox: Mailbox, rate: int, seconds: int
) -> tuple[list[Timing], Stages]:
    """One load step, with the figures that say which stage the latency came from."""
    processed, (wait_sum, wait_count) = stack.processed("safety"), stack.page_wait()
    latencies, posted, at_end, posting = await under_load(poster, mailbox, rate, seconds)
    after_sum, after_count = stack.page_wait()
    pages = after_count - wait_count
    stages = Stages(
        posted=posted,
        safety_behind=posted - (at_end - processed),
        safety_rate=(at_end - processed) / posting,
        page_wait=(after_sum - wait_sum) / pages if pages else float("nan"),
    )
    return latencies, stages


async def under_load(
    poster: Poster, mailbox: Mailbox, rate: int, seconds: int
) -> tuple[list[Timing], int, float, float]:
    """`rate` events/s for `seconds`: every 100 ms one batch per site of background events, SAEs alone.

    Returns the SAEs' latencies, how many events were posted, safety's processed count when the posting ended
    and how long the posting took."""
    ticks, sites = seconds * 10, 4
    per_tick = max(rate // 10, 1)
    sae_every = 50  # ~2% of events
    accepted: dict[str, Timing] = {}
    tasks: list[asyncio.Task[Any]] = []
    run = uuid.uuid4().hex[:6]
    n = 0
    started = time.perf_counter()
    for tick in range(ticks):
        now = datetime.now(UTC)
        batch: list[dict[str, Any]] = []
        for _ in range(per_tick):
            n += 1
            if n % sae_every == 0:
                tag = uuid.uuid4().hex[:10]
                tasks.append(asyncio.create_task(_post_sae(poster, tag, now, accepted)))
            else:
                batch.append(background_event(run, n, 400, now))
        for site in range(sites):
            part = batch[site::sites]
            if part:
                tasks.append(asyncio.create_task(poster.post({"events": part})))
        await asyncio.sleep(max(started + (tick + 1) / 10 - time.perf_counter(), 0))
    await asyncio.gather(*tasks)
    at_end, posting = poster.stack.processed("safety"), time.perf_counter() - started
    return await sae_latencies(poster, mailbox, list(accepted), accepted), n, at_end, posting


async def _post_sae(poster: Poster, tag: str, now: datetime, accepted: dict[str, Timing]) -> None:
    accepted[tag] = await poster.post(sae_event(tag, now))


def lb_csv(first: int, rows: int, subjects: int = 400) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["STUDYID", "DOMAIN", "USUBJID", "LBSEQ", "LBTESTCD", "LBORRES", "LBORRESU", "LBORNRLO", "LBORNRHI", "LBDTC"]
    )
    for n in range(first, first + rows):
        day = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=n // subjects)
        writer.writerow(
            [TRIAL, "LB", f"BF-{n % subjects:04d}", n, "PLAT", platelets(n), "10^9/L", 150, 400, day.isoformat()]
        )
    return out.getvalue().encode()


def platelets(n: int) -> int:
    """5 to 399 x10^9/L, spread over the rows: 5% below 25 (CTCAE grade 4), 6% from 25 to 49 (grade 3)."""
    return 5 + (n * 37) % 395


async def post_backfill(poster: Poster, rows: int, started: asyncio.Event) -> None:
    """The extract in requests of 25,000 rows (ingest takes at most 50,000 per request), one after the other."""
    url = f"{poster.stack.url('ingest')}/v1/sources/backfill/sdtm"
    headers = {"authorization": f"Bearer {BACKFILL_TOKEN}", "content-type": "text/csv"}
    for first in range(0, rows, BACKFILL_CHUNK):
        body = lb_csv(first, min(BACKFILL_CHUNK, rows - first))
        response = await poster.client.post(url, content=body, headers=headers, timeout=900)
        if response.status_code != 202:
            raise RuntimeError(f"backfill answered {response.status_code}: {response.text[:300]}")
        started.set()


async def during_backfill(
    poster: Poster, stack: Stack, mailbox: Mailbox, rows: int
) -> tuple[list[Timing], list[Timing], float]:
    """Post the backfill; from its first accepted request on, an SAE and a live grade-4 lab every 2 s while safety
    drains it (for SENTINEL_BENCH_BACKFILL_SAE_SECONDS, default 30, at most); (SAE latencies, lab latencies,
    safety's backfill rows/s so far)."""
    before = stack.processed("safety")
    signals_before = stack.processed("notify")
    started = asyncio.Event()
    posted = time.perf_counter()
    backfill = asyncio.create_task(post_backfill(poster, rows, started))
    await started.wait()
    print(f"  first backfill request accepted by ingest after {time.perf_counter() - posted:.1f} s")
    accepted: dict[str, Timing] = {}
    latencies: list[Timing] = []
    labs: list[Timing] = []
    window = time.monotonic() + env_int("BACKFILL_SAE_SECONDS", 30)
    while time.monotonic() < window and stack.processed("safety") - before < rows * 0.9:
        tag = uuid.uuid4().hex[:10]
        now = datetime.now(UTC)
        accepted[tag] = await poster.post(sae_event(tag, now))
        lab_tag = uuid.uuid4().hex[:10]
        accepted[lab_tag] = await poster.post(grade4_lab_event(lab_tag, now))
        latencies += await sae_latencies(poster, mailbox, [tag], accepted)
        labs += await sae_latencies(poster, mailbox, [lab_tag], accepted, key=lab_key)
        left = rows - (stack.processed("safety") - before)
        print(
            f"  SAE mailed {latencies[-1].sent:.2f} s after its post, grade-4 lab {labs[-1].sent:.2f} s; "
            f"safety has {max(left, 0):,.0f} backfill rows to go"
        )
        await asyncio.sleep(2)
    drained = stack.processed("safety") - before
    rate = drained / (time.perf_counter() - posted)
    print(f"  notify handled {stack.processed('notify') - signals_before:,.0f} signals meanwhile")
    await backfill
    return latencies, labs, rate


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def describe(timings: list[Timing]) -> str:
    """202 -> mail (the target's measure), then post -> mail (ingest's answer time included)."""
    acked, sent = [t.acked for t in timings], [t.sent for t in timings]
    return (
        f"202->mail p50 {quantile(acked, 0.5) * 1000:6.0f} ms p99 {quantile(acked, 0.99) * 1000:6.0f} ms | "
        f"post->mail p50 {quantile(sent, 0.5) * 1000:6.0f} ms p99 {quantile(sent, 0.99) * 1000:6.0f} ms"
        f" (n={len(timings)})"
    )


@contextmanager
def running_stack() -> Iterator[tuple[Stack, Mailbox]]:
    mailbox = Mailbox()
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as folder:
        root = Path(folder)
        with MailCatcher(root / "mail", port=0, on_message=mailbox.on_message) as catcher:
            stack = Stack(root, catcher.port)
            try:
                stack.start()
                yield stack, mailbox
            finally:
                stack.stop()
                with ThreadPoolExecutor(1) as pool:  # called inside the bench's event loop: a loop of its own
                    pool.submit(asyncio.run, delete_topics(BOOTSTRAP, [stack.prefix])).result()


async def run() -> None:
    rates = [int(r) for r in env_list("RATES", "50,200,500")]
    seconds = env_int("SECONDS", 10)
    rows = env_int("BACKFILL_ROWS", 100_000)
    with running_stack() as (stack, mailbox):
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            poster = Poster(client, stack)
            idle_rss = stack.rss()
            baseline = await idle_baseline(poster, mailbox, 5)
            base_p50 = quantile([t.sent for t in baseline], 0.5)
            print(f"{'baseline: one SAE at a time':<32} {describe(baseline)}")
            for rate in rates:
                latencies, stages = await measured(stack, poster, mailbox, rate, seconds)
                ratio = quantile([t.sent for t in latencies], 0.5) / base_p50
                print(f"{f'at {rate} events/s, 2% SAEs':<32} {describe(latencies)}  post p50/baseline {ratio:.1f}")
                print(f"{'':<32} {stages.line()}")
            if rows:
                latencies, labs, drain = await during_backfill(poster, stack, mailbox, rows)
                for what, timings in (("SAE", latencies), ("grade-4 lab", labs)):
                    worst = max(t.sent for t in timings)
                    print(f"{f'{what} during a {rows:,}-row backfill':<32} {describe(timings)}")
                    print(f"{'':<32} worst post->mail {worst:.2f} s, worst/baseline p50 {worst / base_p50:.1f}")
                print(f"{'backfill rows through safety':<32} {drain:,.0f} rows/s (from the first post)")
            await asyncio.sleep(RSS_SETTLE_SECONDS)  # what each keeps once the load is over, not its peak
            loaded_rss = stack.rss()
    for name in SERVICES:
        print(
            f"RSS {name:<8} idle {idle_rss[name]:6.0f} MB   after load {loaded_rss[name]:6.0f} MB"
            f" (settled {RSS_SETTLE_SECONDS} s)"
        )
    print(
        "targets: p99 < 1 s at 200 events/s; an SAE or a grade >= 3 finding during the 100k backfill < 5 s;"
        " <= 150 MB RSS per service"
    )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
