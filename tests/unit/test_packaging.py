"""Reproducible installs: the locks match pyproject, the image installs exactly the runtime lock on a
digest-pinned base with a health check, and development tools stay out of the runtime."""

from __future__ import annotations

import re
import runpy
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = [ROOT / "requirements" / "runtime.lock", ROOT / "requirements" / "dev.lock"]
stamp = runpy.run_path(str(ROOT / "scripts" / "lock_stamp.py"))


def locked(lock: Path) -> set[str]:
    return {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.\-]+)(?:\[[\w,\-]+\])?==", lock.read_text(), re.M)}


def test_the_committed_locks_were_made_from_pyprojects_declarations() -> None:
    assert stamp["check"](LOCKS) == 0, "run `make lock` and commit requirements/*.lock"


def test_a_changed_dependency_makes_the_lock_stale(tmp_path: Path) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    changed = tmp_path / "pyproject.toml"
    changed.write_text(pyproject.replace('"pyyaml>=6.0",', '"pyyaml>=6.0",\n    "jinja2>=3.1",'))
    assert stamp["fingerprint"](changed) != stamp["fingerprint"](ROOT / "pyproject.toml")
    tool_only = tmp_path / "tool-only.toml"
    tool_only.write_text(pyproject.replace("line-length = 120", "line-length = 100"))
    assert stamp["fingerprint"](tool_only) == stamp["fingerprint"](ROOT / "pyproject.toml")


def test_every_declared_dependency_is_locked_and_dev_tools_are_not_runtime() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}

    runtime, dev = locked(LOCKS[0]), locked(LOCKS[1])
    assert names(project["dependencies"]) <= runtime
    assert names(project["optional-dependencies"]["dev"]) <= dev
    assert "aiosmtpd" not in runtime and "pytest" not in runtime
    assert all("--hash=sha256:" in LOCKS[0].read_text().split(f"\n{name}==", 1)[-1][:400] for name in ["fastapi"])


def test_the_image_is_pinned_installs_the_lock_and_checks_its_health() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base is not None and re.fullmatch(r"python:[\w.\-]+@sha256:[0-9a-f]{64}", base.group(1))
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert "--require-hashes -r requirements/runtime.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    assert re.search(r"^HEALTHCHECK .*\n?.*healthcheck\.py", dockerfile, re.M)
