"""Database engines and column types shared by the services (each service owns its own tables)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Engine, Table, any_, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always returns aware datetimes, also on SQLite, which has no time zones.

    A naive datetime is refused on the way in: a deadline computed from one would be silently wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused by the database layer")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str) -> Engine:
    """SQLite for one machine (WAL, full sync: an acknowledged write survives power loss), else a pooled server.

    `hide_parameters`: a database error's text (which reaches the logs) names the statement, never the values
    bound to it, which may be an event's clinical content.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # psycopg prepares a statement on the server after 5 runs, and PostgreSQL then plans it once for any values.
    # A generic plan made while a table is young (no statistics yet: a fresh database, a backfill) can filter
    # every row against a 500-id IN list: the inbox check of a batch went from 2 ms to 75-180 ms that way.
    # Planned per execution, each query is planned for its values (its IN list hashed) at ~0.1-1 ms.
    psycopg = url.startswith("postgresql+psycopg")
    engine = create_engine(
        url, pool_pre_ping=True, hide_parameters=True, connect_args={"prepare_threshold": None} if psycopg else {}
    )
    if psycopg:
        # An INSERT of many rows as multi-row statements, not psycopg's pipelined executemany (a message per row):
        # over TCP, such a pipeline of a few hundred rows stalled for about 210 ms in a quarter of safety's batches
        # of 500 events, the process idle meanwhile (0 stalls in 20 batches since). 200 ms is Linux's minimum
        # retransmission and persist timeout, so TCP flow control on loopback is the likely cause; not proven.
        engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def one_of(session: Session, column: Mapped[Any], values: Collection[Any]) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`, one parameter however many values.

    An IN list is a placeholder per value: a statement text new for every length, which psycopg converts in Python
    and SQLAlchemy renders per execution (a 500-id list: 3.9 ms against 1.4 ms as an array; 5% of a safety batch).
    """
    attribute: Any = column  # `col(Model.field)`: an instrumented attribute, typed as what it maps
    if session.get_bind().dialect.name != "postgresql":
        return attribute.in_(values)  # type: ignore[no-any-return]
    return attribute == any_(bindparam(None, list(values), type_=ARRAY(attribute.type)))  # type: ignore[no-any-return]


class SchemaBehind(RuntimeError):
    """The database schema is older than this version: refuse to start and say how to upgrade it."""


def create_tables(engine: Engine, tables: Sequence[Any]) -> None:
    """Create just these tables on a scratch database (tests); services migrate with shared.db_migrations."""
    SQLModel.metadata.create_all(engine, tables=[_table(t) for t in tables])


def _table(model: Any) -> Table:
    table = getattr(model, "__table__", model)
    if not isinstance(table, Table):
        raise TypeError(f"{model!r} is not a table")
    return table
