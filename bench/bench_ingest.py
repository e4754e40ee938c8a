"""Ingest throughput against the same-run baselines: `python -m bench.bench_ingest [seconds] [repetitions]`.

- signed single-event POSTs and 100-event POSTs (202 after acks=all), driven by `wrk` (a compiled load generator;
  a Python one would steal the cores it measures), beside a bare FastAPI+uvicorn app parsing the same bodies
  under the same uvicorn settings, interleaved, medians of the repetitions;
- an SDTM LB CSV backfill (rows/s);
- ingest's RSS (VmRSS) once ready and after each load (target <= 150 MB after load);
- Kafka's own ProducerPerformance on the same broker (acks=all, idempotent), the ceiling for events/s.

Runs against the local broker (SENTINEL_KAFKA_BOOTSTRAP_SERVERS, default 127.0.0.1:9092) and SQLite; set
BENCH_DATABASE_URL to an existing PostgreSQL database to measure on it. Each ingest run gets fresh topics (deleted
at the end) and a fresh SQLite file, and every posted event id is new, so what is measured is publishing, not
answering duplicates. Profile a run with py-spy (`py-spy record -p <ingest pid>`; in the dev extra).

BENCH_BASELINE_TREE=/path/to/a/checkout (e.g. `git worktree add /tmp/base main`) also runs that checkout's ingest,
interleaved with this one's and the bare app's under the same load, and reports it beside them: on a shared
machine only a same-run comparison says whether a change helped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.bench_ingest_kafka import producer_perf
from bench.harness import rss_mb
from shared.kafka import delete_topics
from shared.memory import allocator_environment
from shared.webhook_signatures import WebhookSecret, sign

SECRET = "whsec_" + "YmVuY2gtaW5nZXN0LXNlY3JldC0wMTIzNDU2Nzg5"  # base64 of 30 bytes; a throwaway for this bench
BACKFILL_TOKEN = "bench-backfill-token-0123456789"
TRIAL = "NCT07212335"
SUBJECTS = 500
RUN_TAG = uuid.uuid4().hex[:6]
"""Every topic of one run starts with it, so the run deletes exactly its own topics from the shared broker."""
WRK_SCRIPT = """
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
function init(args)
  local nthreads = tonumber(args[2])
  reqs = {}
  local n = 0
  for line in io.lines(args[1]) do
    if n % nthreads == tid then
      local id, ts, sig, body = line:match("^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", wrk.path, {["Content-Type"] = "application/json",
        ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig}, body)
    end
    n = n + 1
  end
  i = 0
  accepted = 0
  other = 0
  reused = 0
end
function request()
  i = i + 1
  if i > #reqs then i = 1; reused = reused + 1 end
  return reqs[i]
end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o, r = 0, 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other"); r = r + t:get("reused") end
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, ' ..
    '"accepted": %d, "other": %d, "reused": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    a, o, r, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    accepted: int
    other: int
    reused: int
    errors: int
    requests: int = 0
    cpu_us_per_request: float = 0.0
    """The server process's CPU (user + system, all its threads) over the run, per request answered."""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: 'sudo apt-get install wrk' (the benchmark needs a compiled load generator)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lab_event(n: int, run: str, now: datetime) -> dict[str, Any]:
    return {
        "id": f"{run}-{n}",
        "type": "lab",
        "study": TRIAL,
        "site": "SITE-1",
        "subject": f"S-{n % SUBJECTS:04d}",
        "data": {
            "result_id": f"{run}-R{n}",
            "test": "NEUT",
            "value": f"{1 + (n % 50) / 10:.1f}",
            "unit": "10^9/L",
            "lln": "1.8",
            "uln": "7.5",
            "collected_at": (now - timedelta(hours=1)).isoformat(),
        },
    }


def write_requests(path: Path, *, count: int, per_request: int, run: str, secret: WebhookSecret) -> None:
    """One signed request per line (webhook-id, timestamp, signature, body), for the wrk script."""
    now = datetime.now(UTC)
    timestamp = str(int(now.timestamp()))
    with path.open("w") as out:
        for r in range(count):
            events = [lab_event(r * per_request + k, run, now) for k in range(per_request)]
            document: Any = events[0] if per_request == 1 else {"events": events}
            body = json.dumps(document, separators=(",", ":")).encode()
            msg_id = f"wh-{run}-{r}"
            out.write(f"{msg_id}\t{timestamp}\t{sign(secret, msg_id, timestamp, body)}\t{body.decode()}\n")


def run_wrk(wrk: str, url: str, requests_file: Path, *, seconds: float, connections: int, threads: int) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        command = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            script.name,
        ]
        command += [url, "--", str(requests_file), str(threads)]
        proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed: {proc.stderr[-2000:]}")
    finally:
        os.unlink(script.name)
    line = next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{"))
    data = json.loads(line)
    return WrkResult(
        requests_per_s=data["requests"] / data["seconds"],
        p50_ms=data["p50_ms"],
        p99_ms=data["p99_ms"],
        accepted=data["accepted"],
        other=data["other"],
        reused=data["reused"],
        errors=data["errors"],
        requests=data["requests"],
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, all its threads (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk_on(running: Running, url: str, requests_file: Path, *, wrk: str, **options: Any) -> WrkResult:
    """`run_wrk` against a running server, with the server's CPU per request over the run."""
    before = cpu_seconds(running.pid)
    result = run_wrk(wrk, running.base + url, requests_file, **options)
    used = cpu_seconds(running.pid) - before
    return replace(result, cpu_us_per_request=used / max(result.requests, 1) * 1e6)


@dataclass(frozen=True)
class Running:
    base: str
    pid: int

    def rss_mb(self) -> float:
        """Resident set size now (VmRSS of /proc/<pid>/status)."""
        return rss_mb(self.pid)

    def settled_rss_mb(self, within: float = 3.0) -> float:
        """The RSS once it stops falling: ingest hands a large request's memory back just after answering it, so
        a reading taken the moment the answer arrives would race that release."""
        deadline = time.monotonic() + within
        last = self.rss_mb()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.rss_mb()
            if now >= last:
                return now
            last = now
        return last


@contextlib.contextmanager
def server(kind: str, env: dict[str, str], tree: Path | None = None) -> Iterator[Running]:
    """Start one server in its own process (from the code in `tree`, this checkout by default); yield its base URL
    and pid once /readyz answers 200."""
    port = free_port()
    logs = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below; its JSON log lines: a pipe nobody reads would fill and stall the server
    environment = {**os.environ, **env}
    if kind == "ingest":  # as `sentinel run ingest` runs it (shared.memory)
        environment = allocator_environment(environment) or environment
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_ingest_server", kind, str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=logs,
        cwd=tree,  # `-m` puts the working directory first on sys.path: that tree's packages are the ones imported
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                logs.seek(0)
                raise RuntimeError(f"{kind} server exited: {logs.read().decode(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server not ready within 60 s")
            time.sleep(0.1)
        yield Running(base, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logs.close()


def ingest_env(workdir: Path, run: str) -> dict[str, str]:
    sources = workdir / f"sources-{run}.yaml"
    sources.write_text(
        "sources:\n  backfill:\n    kind: sdtm\n    trial: " + TRIAL + "\n    max_body_bytes: 100000000\n"
        "    auth: {scheme: bearer, secret: " + BACKFILL_TOKEN + "}\n"
    )
    env = {
        "SENTINEL_WEBHOOK_SECRETS": json.dumps({"edc": SECRET}),
        "SENTINEL_SOURCES_PATH": str(sources),
        "SENTINEL_VAR_DIR": str(workdir / run),
        "SENTINEL_CLINICAL_TOPIC": f"bench.ingest.{run}",
        "SENTINEL_SIGNATURE_TOLERANCE_SECONDS": "3600",
        "SENTINEL_MAX_BODY_BYTES": "2000000",
    }
    if os.environ.get("BENCH_DATABASE_URL"):
        env["SENTINEL_DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    return env


def sdtm_csv(rows: int, run: str) -> bytes:
    lines = ["STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBORRES,LBORRESU,LBORNRLO,LBORNRHI,LBDTC"]
    for n in range(rows):
        subject = f"{run}-{n % SUBJECTS:04d}"
        lines.append(f"{TRIAL},LB,{subject},{n},NEUT,{1 + (n % 50) / 10:.1f},10^9/L,1.8,7.5,2026-01-02T08:15")
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Memory:
    """Ingest's RSS once ready and after the load of one run (MB)."""

    idle: float
    loaded: float


@dataclass(frozen=True)
class Compared:
    ingest: list[WrkResult]
    bare: list[WrkResult]
    memory: list[Memory]
    baseline: list[WrkResult]
    """The BENCH_BASELINE_TREE checkout's ingest under the same load (empty without one)."""
    baseline_memory: list[Memory]


def compare(
    wrk: str,
    workdir: Path,
    *,
    label: str,
    per_request: int,
    count: int,
    seconds: float,
    reps: int,
    connections: int,
    baseline_tree: Path | None = None,
) -> Compared:
    """Interleave ingest and bare runs (and the baseline tree's ingest); each ingest run has a fresh database, topic
    and ids."""
    secret = WebhookSecret.parse(SECRET)
    result = Compared([], [], [], [], [])
    url = "/v1/sources/edc/events"
    for rep in range(reps):
        for tree in ([None, baseline_tree] if baseline_tree else [None])[:: 1 if rep % 2 == 0 else -1]:
            run = f"{RUN_TAG}{label}{rep}{'b' if tree else ''}-{uuid.uuid4().hex[:8]}"
            requests = workdir / f"{run}.tsv"
            write_requests(requests, count=count, per_request=per_request, run=run, secret=secret)
            with server("ingest", ingest_env(workdir, run), tree) as ingest:
                idle = ingest.rss_mb()
                measured = run_wrk_on(
                    ingest, url, requests, wrk=wrk, seconds=seconds, connections=connections, threads=1
                )
                if tree is None:
                    result.ingest.append(measured)
                    result.memory.append(Memory(idle, ingest.settled_rss_mb()))
                else:
                    result.baseline.append(measured)
                    result.baseline_memory.append(Memory(idle, ingest.settled_rss_mb()))
            if tree is None:
                with server("bare", {}) as bare:
                    result.bare.append(
                        run_wrk_on(bare, url, requests, wrk=wrk, seconds=seconds, connections=connections, threads=1)
                    )
            requests.unlink()
    return result


def median(runs: list[WrkResult], attribute: str) -> float:
    return statistics.median(getattr(r, attribute) for r in runs)


def report(label: str, per_request: int, compared: Compared) -> float:
    ingest, bare, memory = compared.ingest, compared.bare, compared.memory
    rate, bare_rate = median(ingest, "requests_per_s"), median(bare, "requests_per_s")
    unit = "req/s" if per_request == 1 else "events/s"
    scale = per_request
    print(
        f"{label:<26} ingest {rate * scale:>10,.0f} {unit}  p50 {median(ingest, 'p50_ms'):7.1f} ms"
        f"  p99 {median(ingest, 'p99_ms'):7.1f} ms | bare {bare_rate * scale:>10,.0f} {unit}"
        f"  p99 {median(bare, 'p99_ms'):6.1f} ms | ratio {rate / bare_rate:.3f}"
    )
    print(
        f"{'':<26} server CPU per request: ingest {median(ingest, 'cpu_us_per_request'):,.0f} us,"
        f" bare {median(bare, 'cpu_us_per_request'):,.0f} us (all threads; the machine's other cores run wrk and"
        " the broker)"
    )
    refused = sum(r.other + r.errors for r in ingest)
    reused = sum(r.reused for r in ingest)
    if refused or reused:
        print(f"{'':<26} (ingest: {refused} answers other than 202, {reused} passes re-sent ids as duplicates)")
    if compared.baseline:
        base_rate = median(compared.baseline, "requests_per_s")
        print(
            f"{'':<26} baseline tree's ingest {base_rate * scale:>10,.0f} {unit} (ratio to bare"
            f" {base_rate / bare_rate:.3f}), CPU per request {median(compared.baseline, 'cpu_us_per_request'):,.0f} us,"
            f" p99 {median(compared.baseline, 'p99_ms'):.1f} ms,"
            f" RSS after the load {statistics.median(m.loaded for m in compared.baseline_memory):.0f} MB:"
            f" this tree at {rate / base_rate:.2f}x"
        )
    idle = statistics.median(m.idle for m in memory)
    loaded = [m.loaded for m in memory]
    print(
        f"{'':<26} ingest RSS idle {idle:.0f} MB, after the load {statistics.median(loaded):.0f} MB"
        f" (max {max(loaded):.0f})"
    )
    return rate * scale


def backfill(workdir: Path, rows: int) -> tuple[float, Memory]:
    run = f"{RUN_TAG}sdtm-{uuid.uuid4().hex[:8]}"
    body = sdtm_csv(rows, run)
    with server("ingest", ingest_env(workdir, run)) as ingest:
        idle = ingest.rss_mb()
        started = time.perf_counter()
        response = httpx.post(
            ingest.base + "/v1/sources/backfill/sdtm",
            content=body,
            headers={"content-type": "text/csv", "authorization": f"Bearer {BACKFILL_TOKEN}"},
            timeout=600,
        )
        elapsed = time.perf_counter() - started
        memory = Memory(idle, ingest.settled_rss_mb())
    if response.status_code != 202 or len(response.json()["accepted"]) != rows:
        raise RuntimeError(f"backfill answered {response.status_code}: {response.text[:500]}")
    return rows / elapsed, memory


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    bootstrap = os.environ.get("SENTINEL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    wrk = ensure_wrk()
    baseline_tree = Path(os.environ["BENCH_BASELINE_TREE"]) if os.environ.get("BENCH_BASELINE_TREE") else None
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-bench-ingest-"))
    try:
        print(
            f"ingest vs bare FastAPI+uvicorn, wrk 1 thread, {seconds:g} s x {reps} interleaved, medians;"
            f" broker {bootstrap}"
        )
        single = compare(
            wrk,
            workdir,
            label="one",
            per_request=1,
            count=int(6000 * seconds),
            seconds=seconds,
            reps=reps,
            connections=32,
            baseline_tree=baseline_tree,
        )
        report("single-event POST", 1, single)
        batch = compare(
            wrk,
            workdir,
            label="hundred",
            per_request=100,
            count=int(400 * seconds),  # more than ingest takes in the time: no id is re-sent
            seconds=seconds,
            reps=reps,
            connections=8,
            baseline_tree=baseline_tree,
        )
        batch_rate = report("100-event POST", 100, batch)
        rows = 20_000
        rows_per_s, backfill_memory = backfill(workdir, rows)
        sample = json.dumps(lab_event(0, "x", datetime.now(UTC)))
        ceiling = producer_perf(
            bootstrap=bootstrap,
            topic=f"bench.producer.{RUN_TAG}",
            records=200_000,
            record_size=len(sample) * 2,
        )
        print(
            f"{'SDTM CSV backfill':<26} {rows_per_s:>10,.0f} rows/s ({rows} LB rows in one request);"
            f" ingest RSS idle {backfill_memory.idle:.0f} MB, after it {backfill_memory.loaded:.0f} MB"
        )
        print(
            f"{'Kafka ProducerPerformance':<26} {ceiling.records_per_s:>10,.0f} records/s (acks=all, idempotent,"
            f" {len(sample) * 2} B, p99 {ceiling.p99_ms:.0f} ms): the ceiling; 100-event ingest at"
            f" {batch_rate / ceiling.records_per_s:.2f}x, backfill at {rows_per_s / ceiling.records_per_s:.2f}x"
        )
        print("targets: single-event ratio >= 0.5; 100-event batches >= 20,000 events/s; <= 150 MB RSS after load")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(Exception):  # cleanup only: a leftover topic is harmless
            asyncio.run(delete_topics(bootstrap, [f"bench.ingest.{RUN_TAG}", f"bench.producer.{RUN_TAG}"]))


if __name__ == "__main__":
    main()
