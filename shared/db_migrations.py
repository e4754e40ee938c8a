"""Database migrations (Alembic), one history per component so services can share a database or not.

Components: `shared` (inbox, outbox, audit tables every consumer uses) and one per service. Each keeps
its own version table (`alembic_version_<component>`), so on one PostgreSQL database the shared tables are
migrated once, and on per-service SQLite files each file gets its own copy.

A service checks at start that its components are at head (`shared.schema_version`, without Alembic): with
`auto_migrate` (the embedded default) it upgrades through this module; otherwise it refuses to start and says
to run `sentinel db upgrade`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table

from shared.db import UTCDateTime
from shared.schema_version import Component


def shared_tables() -> list[Any]:
    """Tables every consuming service uses: inbox, outbox, audit trail (migrated once per database)."""
    from shared.audit import AuditEntry
    from shared.inbox import ProcessedEvent
    from shared.outbox import OutboxMessage

    return [ProcessedEvent, OutboxMessage, AuditEntry]


def own_tables(tables: Sequence[Any]) -> list[Any]:
    """A service's tables without the shared ones, which the `shared` component migrates."""
    shared = {getattr(t, "__tablename__", None) for t in shared_tables()}
    return [t for t in tables if getattr(t, "__tablename__", None) not in shared]


def metadata_of(tables: Sequence[Any]) -> MetaData:
    """A MetaData with copies of just these tables: autogenerate then compares only what the component owns."""
    metadata = MetaData()
    for model in tables:
        table: Table = getattr(model, "__table__", model)
        table.to_metadata(metadata)
    return metadata


def alembic_config(component: Component, engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", component.script_location)
    config.set_main_option("version_table", component.version_table)
    config.attributes["engine"] = engine
    config.attributes["version_table"] = component.version_table
    return config


def head_revision(component: Component, engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(component, engine)).get_current_head()


def current_revision(component: Component, engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": component.version_table})
        return context.get_current_revision()


def upgrade(components: Sequence[Component], engine: Engine) -> list[tuple[str, str | None, str | None]]:
    """Bring each component to head; returns (component, from, to) for each."""
    done = []
    for component in components:
        before = current_revision(component, engine)
        config = alembic_config(component, engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        done.append((component.name, before, current_revision(component, engine)))
    return done


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our column type by its import path, so migrations do not depend on a generic stand-in."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import shared.db")
        return "shared.db.UTCDateTime()"
    return False


def run_env(context: Any, tables: Sequence[Any]) -> None:
    """The body of every component's env.py: online migrations on the engine or connection we pass in."""
    config = context.config
    target_metadata = metadata_of(tables)
    version_table = config.attributes.get("version_table") or config.get_main_option("version_table")
    connection = config.attributes.get("connection")
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "version_table": version_table,
        "render_as_batch": True,  # SQLite cannot ALTER most things; batch mode copies the table
        "compare_type": True,
        "render_item": _render_item,
    }
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine: Engine = config.attributes["engine"]
    with engine.begin() as conn:
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()
