"""The deploy files are checked by the tools operators use: promtool, the compose spec, kustomize and the
Kubernetes schemas; and every metric the rules and dashboard name is one the services really expose."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TOOLS_BIN = Path(os.environ.get("SENTINEL_TOOLS_BIN", Path.home() / ".cache" / "sentinel" / "bin"))


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS_BIN))
    if found is None:
        message = f"{name} is not installed; run scripts/ensure-tools.sh (make test does)"
        if os.environ.get("SENTINEL_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_accepts_the_scrape_config(config: str) -> None:
    run(tool("promtool"), "check", "config", str(DEPLOY / "prometheus" / config))


def test_promtool_accepts_and_unit_tests_every_alert_rule() -> None:
    promtool = tool("promtool")
    rules = DEPLOY / "prometheus" / "rules" / "sentinel.yml"
    run(promtool, "check", "rules", str(rules))
    run(promtool, "test", "rules", str(DEPLOY / "prometheus" / "tests" / "sentinel.test.yml"))
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" / "tests" / "sentinel.test.yml").read_text()))
    defined = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert defined <= tested, f"alert rules without a unit test: {sorted(defined - tested)}"
    for group in yaml.safe_load(rules.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"].get("runbook"), f"{rule['alert']} has no runbook line"


def test_compose_file_follows_the_compose_spec() -> None:
    run(
        sys.executable,
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        str(DEPLOY / "compose.yaml"),
    )


@pytest.mark.parametrize("kustomization", ["base", "overlays/example"])
def test_kubernetes_manifests_build_and_validate(kustomization: str, tmp_path: Path) -> None:
    built = run(tool("kustomize"), "build", str(DEPLOY / "k8s" / kustomization))
    out = tmp_path / "manifests.yaml"
    out.write_text(built)
    run(sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(out))
    documents = [d for d in yaml.safe_load_all(built) if d]
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "sentinel-ingest",
        "sentinel-safety",
        "sentinel-notify",
        "sentinel-console",
    }
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert {"requests", "limits"} <= set(container["resources"])
    kinds = {d["kind"] for d in documents}
    assert {"PodDisruptionBudget", "Job", "Service", "ConfigMap"} <= kinds


def exposed_metric_names(tmp_path: Path) -> set[str]:
    """Names on /metrics of the three apps as built (no broker needed: the lifespan is not entered)."""
    from services.ingest.main import create_app as ingest_app
    from services.ingest.settings import IngestSettings
    from services.notify.main import create_app as notify_app
    from services.notify.settings import NotifySettings
    from services.safety.main import create_app as safety_app
    from services.safety.settings import SafetySettings

    apps = [
        ingest_app(IngestSettings(var_dir=tmp_path), registry=CollectorRegistry()),
        safety_app(SafetySettings(var_dir=tmp_path), registry=CollectorRegistry()),
        notify_app(NotifySettings(var_dir=tmp_path), registry=CollectorRegistry()),
    ]
    names: set[str] = set()
    for app in apps:
        text = TestClient(app).get("/metrics").text
        for match in re.finditer(r"^# TYPE (\w+) (\w+)", text, re.M):
            name, kind = match.groups()
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


def referenced_metric_names() -> set[str]:
    exprs = [
        r["expr"]
        for g in yaml.safe_load((DEPLOY / "prometheus/rules/sentinel.yml").read_text())["groups"]
        for r in g["rules"]
    ]
    dashboard = json.loads((DEPLOY / "grafana/dashboards/sentinel.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names: set[str] = set()
    for expr in exprs:
        names.update(re.findall(r"\b((?:sentinel|process|python)_\w+)", expr))
        for pattern in re.findall(r'__name__=~"([^"]+)"', expr):  # expand sentinel_(safety|notify)_x
            prefix, alternatives, suffix = re.match(r"(\w*)\(([\w|]+)\)(\w*)", pattern).groups()  # type: ignore[union-attr]
            names.update(prefix + alt + suffix for alt in alternatives.split("|"))
    return {n for n in names if not re.fullmatch(r"(sentinel|process|python)_\w*_$", n)}


def test_every_metric_in_rules_and_dashboard_is_exposed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SENTINEL_") and name not in {"SENTINEL_REQUIRE_SERVICES"}:
            monkeypatch.delenv(name)
    missing = referenced_metric_names() - exposed_metric_names(tmp_path)
    assert not missing, f"rules or dashboard use metrics no service exposes: {sorted(missing)}"
