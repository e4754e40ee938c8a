"""A 10,000-row SDTM backfill through the real broker: batches of concurrent sends, 202 after every ack,
progress reported, every row on the topic once, one subject's rows in order."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from shared.events import CLINICAL_ADAPTER, LabResulted
from shared.lanes import bulk_topic
from tests.kafka_tools import read_topic_sync
from tests.polling import wait_for

pytestmark = pytest.mark.integration
TOKEN = "backfill-token-0123456789abcdef"
TRIAL = "NCT07212335"
ROWS = 10_000
SUBJECTS = 40


def lb_csv(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["STUDYID", "DOMAIN", "USUBJID", "LBSEQ", "LBTESTCD", "LBORRES", "LBORRESU", "LBORNRLO", "LBORNRHI", "LBDTC"]
    )
    for n in range(rows):
        subject = f"101-{n % SUBJECTS:03d}"
        writer.writerow([TRIAL, "LB", subject, n, "PLAT", 50 + n % 300, "THOU/uL", 150, 400, "2026-01-21T08:00:00Z"])
    return out.getvalue().encode()


@pytest.fixture
def ingest(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    topic = f"{topic_prefix}.clinical"
    sources = {
        "backfill": {
            "kind": "sdtm",
            "trial": TRIAL,
            "auth": {"scheme": "bearer", "secret": TOKEN},
            "max_body_bytes": 20_000_000,
        }
    }
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    settings = IngestSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        clinical_topic=topic,
        sources_path=tmp_path / "sources.yaml",
        var_dir=tmp_path,
        background_jobs=False,
        publish_batch_size=2000,
    )
    with TestClient(create_app(settings, registry=CollectorRegistry(), env={})) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="ingest ready")
        yield client, topic


def test_ten_thousand_rows(
    ingest: tuple[TestClient, str], kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, topic = ingest
    body = lb_csv(ROWS)
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "text/csv"}
    caplog.set_level(logging.INFO, logger="services.ingest.intake")
    started = time.perf_counter()
    response = client.post("/v1/sources/backfill/sdtm", content=body, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text[:500]
    assert len(response.json()["accepted"]) == ROWS
    progress = [r.getMessage() for r in caplog.records if "events published" in r.getMessage()]
    assert progress[-1].endswith(f"{ROWS} of {ROWS} events published") and len(progress) == ROWS // 2000
    print(f"\nbackfill: {ROWS} rows in {elapsed:.2f} s = {ROWS / elapsed:.0f} rows/s through the broker")

    records = read_topic_sync(kafka_bootstrap, bulk_topic(topic), expect=ROWS, timeout=60)  # a backfill's lane
    assert len(records) == ROWS
    seqs: dict[bytes, list[int]] = {}
    for record in records:
        envelope = CLINICAL_ADAPTER.validate_json(record.value)
        assert isinstance(envelope, LabResulted) and envelope.data.unit == "10^3/uL"
        assert record.key is not None
        seqs.setdefault(record.key, []).append(int(envelope.data.result_id.removeprefix("LBSEQ-")))
    assert len(seqs) == SUBJECTS and all(s == sorted(s) for s in seqs.values())

    again = client.post("/v1/sources/backfill/sdtm", content=body, headers=headers)
    assert again.status_code == 200 and len(again.json()["duplicates"]) == ROWS
