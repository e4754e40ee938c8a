"""Ingest's SQLite connections checkpoint the WAL after `sqlite_checkpoint_pages`, every one of them, and keep
the durability settings every service has (WAL, full sync)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from tests.unit.conftest import FakePublisher

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_every_connection_checkpoints_at_the_configured_size(clean_env: None, tmp_path: Path) -> None:
    settings = IngestSettings(webhook_secrets={"edc": SECRET}, var_dir=tmp_path, sqlite_checkpoint_pages=12_345)
    engine = create_app(settings, publisher=FakePublisher(), registry=CollectorRegistry(), env={}).state.runtime.engine
    with engine.connect() as first, engine.connect() as second:  # two pooled connections, both set up alike
        for connection in (first, second):
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 12_345
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: a commit is on disk
    engine.dispose()
