"""A real Prometheus server scrapes a running notify with the shipped alert rules; when an SAE reporting
obligation goes overdue, SentinelObligationOverdue fires."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from services.devstack.mail_catcher import MailCatcher
from shared.events import message_key
from tests.e2e.stack import Stack, free_port
from tests.integration.test_deploy_manifests import DEPLOY, tool
from tests.kafka_tools import publish_sync
from tests.polling import wait_for
from tests.signal_factories import sae_detected

pytestmark = pytest.mark.integration


@pytest.fixture
def notify(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Iterator[Stack]:
    with MailCatcher(tmp_path / "mail", port=0) as catcher:
        stack = Stack(tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, smtp_port=catcher.port)
        try:
            stack.start("notify")
            stack.wait_ready("notify")
            yield stack
        finally:
            stack.stop()


@pytest.fixture
def prometheus(tmp_path: Path, notify: Stack) -> Iterator[str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "rules" / "sentinel.yml")],
        "scrape_configs": [
            {"job_name": "sentinel-notify", "static_configs": [{"targets": [f"127.0.0.1:{notify.ports['notify']}"]}]}
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + "/-/ready"), timeout=30, what="prometheus ready")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def firing(url: str, name: str) -> list[dict[str, object]]:
    alerts = httpx.get(url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_overdue_sae_obligation_fires_the_alert(notify: Stack, prometheus: str, kafka_bootstrap: str) -> None:
    assert not firing(prometheus, "SentinelObligationOverdue")
    aware = datetime.now(UTC) - timedelta(hours=25)  # reported a day late: overdue on arrival
    signal = sae_detected("101-077", aware=aware, ae_id="AE-3", term="Sepsis", grade=4, criteria=["life_threatening"])
    publish_sync(
        kafka_bootstrap,
        notify.env["SENTINEL_SIGNALS_TOPIC"],
        [(message_key("NCT07212335", "101-077"), signal.model_dump_json().encode())],
    )
    alerts = wait_for(lambda: firing(prometheus, "SentinelObligationOverdue"), timeout=60, what="alert firing")
    labels = alerts[0]["labels"]
    assert isinstance(labels, dict)
    assert (labels["trial"], labels["kind"], labels["severity"]) == ("NCT07212335", "sae_report", "page")
    targets = httpx.get(prometheus + "/api/v1/targets").json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
