"""Migrations on SQLite and PostgreSQL: from empty to head they build exactly the models' schema, several
services can share one database, and a service refuses to start on a schema that is behind."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from prometheus_client import CollectorRegistry

from services.notify.main import create_app as notify_app
from services.notify.settings import NotifySettings
from services.runner import SERVICES, migration_components
from shared.db import SchemaBehind, make_engine
from shared.db_migrations import SHARED, current_revision, head_revision, metadata_of, shared_tables, upgrade

pytestmark = pytest.mark.integration


def model_tables(service: str) -> list[object]:
    from services.ingest import models as ingest
    from services.notify import models as notify
    from services.safety import models as safety

    return list({"ingest": ingest, "safety": safety, "notify": notify}[service].TABLES)


def test_every_service_migrates_onto_one_database_and_matches_its_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        for service in SERVICES:
            upgrade(migration_components(service), engine)
        for service in SERVICES:
            for component in migration_components(service):
                assert current_revision(component, engine) == head_revision(component, engine)
        tables = [*shared_tables(), *(t for s in SERVICES for t in model_tables(s))]
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, metadata_of(list({id(t): t for t in tables}.values())))
        assert [d for d in diff if not _is_version_table(d)] == []
    finally:
        engine.dispose()


def _is_version_table(diff: object) -> bool:
    """Alembic's own version tables are not in the models."""
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name.startswith("alembic_version_")


def test_service_refuses_a_schema_that_is_behind(database_url: str, tmp_path: object) -> None:
    engine = make_engine(database_url)
    upgrade([SHARED], engine)  # notify's own tables never migrated
    engine.dispose()
    settings = NotifySettings(database_url=database_url, auto_migrate=False)
    with pytest.raises(SchemaBehind, match="sentinel db upgrade"):
        notify_app(settings, registry=CollectorRegistry())
    auto = NotifySettings(database_url=database_url, auto_migrate=True)
    notify_app(auto, registry=CollectorRegistry())  # upgrades, then starts
