"""Migrations on SQLite and PostgreSQL: from empty to head they build exactly the models' schema, several
services can share one database, and a service refuses to start on a schema that is behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from prometheus_client import CollectorRegistry

from services.notify.main import create_app as notify_app
from services.notify.settings import NotifySettings
from services.runner import SERVICES, migration_components
from shared.db import SchemaBehind, make_engine
from shared.db_migrations import current_revision, head_revision, metadata_of, shared_tables, upgrade
from shared.schema_version import SHARED, _assigned, head_of, stored_revision

ROOT = Path(__file__).resolve().parents[2]

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


def test_the_head_read_from_the_revision_files_is_alembics(database_url: str) -> None:
    """The start-up check reads each history's head without Alembic: it must be the head Alembic computes."""
    engine = make_engine(database_url)
    try:
        for service in SERVICES:
            for component in migration_components(service):
                assert head_of(component) == head_revision(component, engine), component.name
                assert head_of(component) is not None
    finally:
        engine.dispose()


def test_a_service_on_a_current_schema_never_loads_alembic(database_url: str, tmp_path: Path) -> None:
    """Alembic is about 10 MB resident: a deployment (migrated by its Job) must not carry it in every service."""
    engine = make_engine(database_url)
    try:
        upgrade(migration_components("safety"), engine)
        assert all(stored_revision(c, engine) == head_of(c) for c in migration_components("safety"))
    finally:
        engine.dispose()
    script = tmp_path / "start.py"
    script.write_text(
        "import sys\n"
        "from shared.db import make_engine\n"
        "from services.runner import migration_components\n"
        "from shared.schema_version import prepare_database\n"
        f"engine = make_engine({database_url!r})\n"
        "prepare_database(engine, migration_components('safety'), auto_migrate=False)\n"
        "prepare_database(engine, migration_components('safety'), auto_migrate=True)\n"
        "assert 'alembic' not in sys.modules, 'alembic was imported'\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_revision_file_is_read_not_run(tmp_path: Path) -> None:
    source = (
        '"""x"""\nfrom alembic import op\nrevision: str = "b"\ndown_revision = ("a", "c")\nbranch_labels = None\n'
        "def upgrade() -> None:\n    raise SystemExit\n"
    )
    assert _assigned(source) == {"revision": "b", "down_revision": ("a", "c"), "branch_labels": None}
