"""Whether a database is at this version's schema, without Alembic: what a service checks at every start.

Alembic (with Mako) is about 10 MB resident once imported, and a service would keep it for its whole life to
answer one question at start. So the head of each component's history is read from its revision files (their
`revision` and `down_revision` assignments, parsed, never imported) and the stored revision from its version
table. Only when something is behind is `shared.db_migrations` (Alembic) imported: to upgrade (`auto_migrate`,
the embedded default) or to say which. Deployments migrate with `sentinel db upgrade` (the Kubernetes Job) and
run services with `SENTINEL_AUTO_MIGRATE=false`, so a service there never loads Alembic at all.
"""

from __future__ import annotations

import ast
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, column, inspect, select, table

from shared.db import SchemaBehind


@dataclass(frozen=True)
class Component:
    name: str
    script_location: str  # "package:folder", e.g. "services.safety:migrations"

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"


SHARED = Component("shared", "shared:migrations")


def _assigned(source: str) -> dict[str, object]:
    """The literal values a revision file assigns at module level (`revision`, `down_revision`, ...)."""
    found: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        try:
            found[name] = ast.literal_eval(value)
        except ValueError:
            continue
    return found


def head_of(component: Component) -> str | None:
    """The one head of the component's history; None when it cannot be told here (no revisions, or several
    heads): the caller then asks Alembic."""
    package, folder = component.script_location.split(":", 1)
    versions = importlib.resources.files(package).joinpath(folder, "versions")
    revisions: set[str] = set()
    parents: set[str] = set()
    for entry in versions.iterdir():
        if not entry.name.endswith(".py") or entry.name.startswith("__"):
            continue
        assigned = _assigned(entry.read_text(encoding="utf-8"))
        revision, down = assigned.get("revision"), assigned.get("down_revision")
        if not isinstance(revision, str):
            return None
        revisions.add(revision)
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list):
            parents.update(str(d) for d in down)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def stored_revision(component: Component, engine: Engine) -> str | None:
    """The revision the database records for the component (None: never migrated, or several rows)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(component.version_table):
            return None
        versions = table(component.version_table, column("version_num"))
        rows = connection.execute(select(versions.c.version_num)).scalars().all()
    return rows[0] if len(rows) == 1 else None


def prepare_database(engine: Engine, components: Sequence[Component], *, auto_migrate: bool) -> None:
    """Upgrade (embedded default) or refuse to run on a schema that is behind, naming the fix. A database already
    at head is checked without Alembic."""
    if all((head := head_of(c)) is not None and stored_revision(c, engine) == head for c in components):
        return
    from shared import db_migrations

    if auto_migrate:
        db_migrations.upgrade(components, engine)
        return
    revisions = [
        (c.name, db_migrations.current_revision(c, engine), db_migrations.head_revision(c, engine)) for c in components
    ]
    behind = [f"{name} at {current or 'nothing'} (head {head})" for name, current, head in revisions if current != head]
    if behind:
        raise SchemaBehind(
            f"the database at {engine.url.render_as_string(hide_password=True)} is behind this version: "
            f"{'; '.join(behind)}. Run `sentinel db upgrade` (the migration Job in Kubernetes)."
        )
