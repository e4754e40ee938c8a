"""The fault suite's own broker and PostgreSQL (it stops and starts them), and its printed report.

Runs only when SENTINEL_RUN_FAULTS=1 (`make faults`, and `make test` after the main suite): it stops
servers, so it never runs by accident inside another suite, and never touches the shared broker on 9092 or
the tests' PostgreSQL: both are private, on free ports, in temporary directories.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.e2e.stack import free_port
from tests.faults.harness import Outcome

ROOT = Path(__file__).resolve().parents[2]
REPORT = pytest.StashKey[list[Outcome]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SENTINEL_RUN_FAULTS") == "1":
        return
    skip = pytest.mark.skip(reason="the fault suite stops servers: run it with `make faults` (SENTINEL_RUN_FAULTS=1)")
    for item in items:
        if "tests/faults/" in str(item.path):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> Callable[[Outcome], None]:
    outcomes = pytestconfig.stash.setdefault(REPORT, [])
    return outcomes.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    outcomes = config.stash.get(REPORT, [])
    if not outcomes:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault suite: what a person would notice")
    header = (
        f"{'scenario':<54} {'SAEs':>4} {'pages':>5} {'lost':>4} {'late':>4} {'dup':>3} {'same-id':>7} "
        f"{'alerts l/d':>10} {'pending':>7}  {'page latency after fault':<24} {'s':>4}"
    )
    write(header)
    write("-" * len(header))
    for o in outcomes:
        alerts = f"{o.alerts_lost}/{o.alerts_duplicated}"
        write(
            f"{o.scenario[:54]:<54} {o.saes:>4} {o.pages_expected:>5} {o.lost_pages:>4} {o.late_pages:>4} "
            f"{o.duplicated_pages:>3} "
            f"{o.resent_same_message_id:>7} {alerts:>10} {o.unsettled_deliveries:>7}  "
            f"{o.latency_text():<24} {o.seconds:>4.0f}"
        )
    write("")
    total_lost = sum(o.lost_pages for o in outcomes)
    total_dup = sum(o.duplicated_pages for o in outcomes)
    total_late = sum(o.late_pages for o in outcomes)
    write(
        f"TOTAL: {total_lost} lost SAE pages, {total_dup} duplicated SAE pages, {total_late} late (still pending) "
        f"over {len(outcomes)} scenarios"
    )
    write(
        "lost: never mailed and nothing pending; late: not mailed within the scenario but still pending; dup: the "
        "same page as two messages; same-id: re-sent copies mail clients merge; pending: SAE deliveries not sent"
    )
    for o in outcomes:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(o.answers.items()))
        verdict = "OK" if not o.problems else "FAIL: " + "; ".join(o.problems)
        write(f"- {o.scenario}: {verdict}")
        if answers:
            write(f"    webhook answers: {answers}")
        if o.bulk_before_last_page is not None:
            write(f"    low-urgency mails delivered before the last SAE page: {o.bulk_before_last_page}")
        if o.note:
            write(f"    {o.note}")
        if o.problems and o.depends_on:
            write(f"    guards: {o.depends_on}")


@pytest.fixture(scope="session")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A broker of the suite's own, so that 'broker down' stops nobody else's."""
    from services.devstack import kafka_broker as kb

    cfg = dataclasses.replace(
        kb.BrokerConfig(),
        state_dir=tmp_path_factory.mktemp("kafka"),
        port=free_port(),
        controller_port=free_port(),
    )
    kb.up(cfg)
    try:
        yield cfg
    finally:
        kb.down(cfg)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL cluster of the suite's own (scripts/ensure-postgres.sh on a free port), to stop and start."""
    port = free_port()
    env = {
        **os.environ,
        "SENTINEL_TEST_PG_PORT": str(port),
        # Not under pytest's tmp dir: as root the server runs as the postgres user, who cannot enter it.
        "SENTINEL_TEST_PG_DIR": f"/tmp/sentinel-faults-pg-{port}",
    }
    script = str(ROOT / "scripts" / "ensure-postgres.sh")
    url = subprocess.run([script, "start"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield {"url": url, "script": script, **{k: env[k] for k in ("SENTINEL_TEST_PG_PORT", "SENTINEL_TEST_PG_DIR")}}
    finally:
        subprocess.run([script, "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(env["SENTINEL_TEST_PG_DIR"], ignore_errors=True)


@pytest.fixture
def fault_database(private_postgres: dict[str, str]) -> Iterator[str]:
    """A new database on the private cluster for one scenario."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    # No pool: the scenario restarts the server, which ends any connection kept from before.
    admin = create_engine(private_postgres["url"], isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(private_postgres["url"]).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
