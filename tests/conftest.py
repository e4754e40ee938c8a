"""Fixtures for the real parts: the Kafka broker, PostgreSQL, fresh topics and databases per test.

A missing real service fails the run when SENTINEL_REQUIRE_SERVICES=1 (as `make test` sets); a developer
running a subset without them gets a skip that says what to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def _missing(what: str) -> None:
    message = f"{what} is not available; run `make test` (it starts the broker and PostgreSQL)"
    if os.environ.get("SENTINEL_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


async def _broker_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("SENTINEL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    if not asyncio.run(_broker_answers(bootstrap)):
        _missing(f"the Kafka broker at {bootstrap}")
    return bootstrap


@pytest.fixture(scope="session")
def handed_out_prefixes() -> Iterator[list[str]]:
    """Every topic namespace this session handed out: their topics are deleted at its end (a developer's broker
    would otherwise keep thousands, which slows every full metadata fetch on it)."""
    prefixes: list[str] = []
    yield prefixes
    if prefixes:
        from shared.kafka import delete_topics

        bootstrap = os.environ.get("SENTINEL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        with contextlib.suppress(Exception):  # cleanup only: a broker already stopped keeps them, harmlessly
            asyncio.run(asyncio.wait_for(delete_topics(bootstrap, prefixes), timeout=60))


@pytest.fixture
def topic_prefix(handed_out_prefixes: list[str]) -> str:
    """A fresh topic namespace per test: tests never see each other's messages."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    handed_out_prefixes.append(prefix)
    return prefix


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get("SENTINEL_TEST_DATABASE_URL")
    if not url:
        _missing("PostgreSQL (SENTINEL_TEST_DATABASE_URL)")
    assert url is not None
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty database for this test, dropped afterwards."""
    name = f"sentinel_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same test body against SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
