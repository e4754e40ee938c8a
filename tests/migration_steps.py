"""Bring a fresh database to the revision a data migration under test starts from."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine

from services.runner import migration_components
from shared.db_migrations import alembic_config, upgrade
from shared.schema_version import Component


def upgrade_to(engine: Engine, service: str, revision: str) -> Component:
    """The shared tables at head and `service`'s own up to `revision`; returns its component, for the test to
    upgrade the rest (`shared.db_migrations.upgrade`) once it has stored the rows the migration must carry over."""
    shared, component = migration_components(service)
    upgrade([shared], engine)
    config = alembic_config(component, engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return component
