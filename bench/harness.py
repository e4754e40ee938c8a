"""What the consumer benchmarks share: a fresh database (SQLite file or a new PostgreSQL database), a fresh
topic filled with a stream, and the settings to read it. Sizes come from SENTINEL_BENCH_* variables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.clinical_load import Message

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("SENTINEL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(f"SENTINEL_BENCH_{name}", default))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(f"SENTINEL_BENCH_{name}", default).split(",") if item.strip()]


def postgres_admin_url() -> str:
    """SENTINEL_BENCH_DATABASE_URL, or the test suite's server, or a throwaway one the script starts."""
    for name in ("SENTINEL_BENCH_DATABASE_URL", "SENTINEL_TEST_DATABASE_URL"):
        if os.environ.get(name):
            return os.environ[name]
    script = ROOT / "scripts" / "ensure-postgres.sh"
    url = subprocess.run([str(script), "start"], check=True, capture_output=True, text=True).stdout.strip()
    os.environ["SENTINEL_BENCH_DATABASE_URL"] = url
    return url


@contextlib.contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """An empty database of this kind for one run, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    admin_url = postgres_admin_url()
    name = f"sentinel_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fresh_topic(label: str) -> str:
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


async def produce(topic: str, messages: Sequence[Message], *, bootstrap: str = BOOTSTRAP) -> None:
    """Everything on the topic, acknowledged, as fast as the producer batches it (order per key kept)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        pending = []
        for n, message in enumerate(messages):
            pending.append(await producer.send(topic, value=message.value, key=message.key))
            if n % 5000 == 4999:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def rss_mb(pid: int | None = None) -> float:
    """Resident set size in MB (Linux /proc)."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


OUTCOMES = ("processed", "duplicate", "dead_lettered")


async def timed_drain(
    service: Any,
    registry: Any,
    *,
    name: str,
    total: int,
    limit_s: float,
    warmup: int = 0,
    committed: asyncio.Event | None = None,
) -> tuple[float, int]:
    """Records per second for a consumer service to work through `total` records already on its topics, and how
    many it handled: all of them, or what it did in `limit_s` seconds from the clock's start (a slow rule cannot
    make the run long). The clock starts at the first count seen once `warmup` records are handled (the group
    join is not counted, nor the warm-up), and what was handled by then is left out. NaN: too small to time.

    `committed`, set by the service after each commit (its `on_committed`), wakes the count when it changes: reading
    the registry every 5 ms (a read collects every metric) took the interpreter from the service being measured.
    """

    def done() -> float:
        metric = f"sentinel_{name}_events_processed_total"
        return sum(registry.get_sample_value(metric, {"outcome": o}) or 0 for o in OUTCOMES)

    async with service.running():
        deadline = time.monotonic() + 120
        first: tuple[float, float] | None = None
        while (count := done()) < total:
            if first is None and count and count >= warmup:
                first = (time.perf_counter(), count)
                deadline = time.monotonic() + limit_s
            if time.monotonic() > deadline:
                break
            if committed is None:
                await asyncio.sleep(0.005)
                continue
            with contextlib.suppress(TimeoutError):  # a batch with nothing processed (all duplicates) sets nothing
                await asyncio.wait_for(committed.wait(), timeout=0.05)
            committed.clear()
        finished = time.perf_counter()
    if first is None or first[1] >= count:
        return float("nan"), int(count)
    return (count - first[1]) / (finished - first[0]), int(count)
