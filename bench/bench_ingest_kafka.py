"""The ceiling for ingest: Kafka's own producer perf test on the same broker, with ingest's producer settings.

`org.apache.kafka.tools.ProducerPerformance` lives in the `kafka-tools` artifact, which the broker's classpath
lacks; it is resolved from Maven Central once, the way `services/devstack/kafka_broker.py` resolves the broker
jars, into `~/.cache/sentinel/kafka-tools-<version>/lib`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.devstack.kafka_broker import BrokerConfig, ensure_tools

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.sentinel</groupId>
  <artifactId>kafka-bench-tools</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-nop</artifactId>
      <version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
"""
_RESULT = re.compile(r"(\d+) records sent, ([\d.]+) records/sec .*?([\d.]+) ms avg latency, ([\d.]+) ms max latency")
_PERCENTILES = re.compile(r"([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th")


@dataclass(frozen=True)
class ProducerResult:
    records: int
    records_per_s: float
    avg_ms: float
    p99_ms: float


def tools_dir(cfg: BrokerConfig | None = None) -> Path:
    """The kafka-tools classpath, resolved with Maven on first use (a COMPLETE marker proves a full download)."""
    cfg = cfg or BrokerConfig()
    target = cfg.cache_dir / f"kafka-tools-{cfg.version}"
    if (target / "COMPLETE").is_file():
        return target / "lib"
    ensure_tools()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (work / "pom.xml").write_text(_POM.format(version=cfg.version))
        command = [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={work / 'lib'}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=work)
        if proc.returncode != 0:
            raise RuntimeError(f"Maven could not fetch kafka-tools {cfg.version}:\n{proc.stdout[-2000:]}")
        (work / "COMPLETE").write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "lib"


def producer_perf(*, bootstrap: str, topic: str, records: int, record_size: int) -> ProducerResult:
    """Run ProducerPerformance with acks=all and idempotence, as ingest's producer; parse its summary line."""
    lib = tools_dir()
    command = [
        "java",
        "-Xmx256m",
        "-cp",
        str(lib / "*"),
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        "linger.ms=5",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    match, percentiles = _RESULT.search(summary), _PERCENTILES.search(summary)
    if proc.returncode != 0 or match is None or percentiles is None:
        raise RuntimeError(f"ProducerPerformance failed ({proc.returncode}): {proc.stderr[-2000:] or summary}")
    return ProducerResult(
        records=int(match.group(1)),
        records_per_s=float(match.group(2)),
        avg_ms=float(match.group(3)),
        p99_ms=float(percentiles.group(3)),
    )
