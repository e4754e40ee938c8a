"""What the hot path keeps between posts: one SQLite read connection (seeing every commit, giving it back) and a
less eager garbage collector while the app runs."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from services.ingest import store
from services.ingest.main import MIGRATIONS
from shared.db import make_engine
from shared.schema_version import SHARED, prepare_database
from tests.unit.conftest import START


def ingest_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'ingest.db'}")
    prepare_database(engine, [SHARED, MIGRATIONS], auto_migrate=True)
    return engine


def accept(engine: Engine, key: str, version: str) -> None:
    update = store.VersionUpdate(key, version, None, "lab", "R1", "NCT07212335", "S-1", "SITE-1", False, START)
    with engine.begin() as connection:
        store.save_accepted(
            connection, writes=[store.AcceptedWrite(source_id="edc", envelopes=[], updates=[update], now=START)]
        )


def read(reader: store.HeldReader) -> store.Known:
    return reader.read_known(source_id="edc", event_ids=["e1"], record_keys=["k1"], webhook_id=None)


def test_each_read_sees_what_was_committed_since_the_last_one(tmp_path: Path) -> None:
    engine = ingest_engine(tmp_path)
    reader = store.HeldReader(engine)
    assert read(reader).versions == {}
    accept(engine, "k1", "v1")  # another connection (the commit queue's) commits between two reads
    assert read(reader).versions["k1"].source_version == "v1"
    accept(engine, "k1", "v2")
    assert read(reader).versions["k1"].source_version == "v2"
    assert engine.pool.checkedout() == 1, "one connection, kept between reads"  # type: ignore[attr-defined]
    reader.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


def test_a_held_connection_never_keeps_the_writer_from_checkpointing(tmp_path: Path) -> None:
    """A reader left inside a transaction would pin its snapshot and the WAL behind it."""
    engine = ingest_engine(tmp_path)
    reader = store.HeldReader(engine)
    read(reader)
    accept(engine, "k1", "v1")
    with engine.connect() as connection:
        busy, _log, _checkpointed = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    assert busy == 0
    reader.close()
    engine.dispose()


def test_a_failed_read_drops_the_connection_and_the_next_read_takes_another(tmp_path: Path) -> None:
    engine = ingest_engine(tmp_path)
    reader = store.HeldReader(engine)
    read(reader)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE ingest_record_versions RENAME TO moved")
    with pytest.raises(OperationalError):
        read(reader)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE moved RENAME TO ingest_record_versions")
    accept(engine, "k1", "v3")
    assert read(reader).versions["k1"].source_version == "v3"
    reader.close()
    engine.dispose()


def test_a_reader_nobody_closed_gives_its_connection_back_when_collected(tmp_path: Path) -> None:
    engine = ingest_engine(tmp_path)
    reader = store.HeldReader(engine)
    read(reader)
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    del reader
    gc.collect()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()
    assert os.path.exists(tmp_path / "ingest.db")
