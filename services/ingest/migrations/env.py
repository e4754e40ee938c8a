"""Alembic environment of the ingest service's own tables."""

from alembic import context

from services.ingest.models import TABLES
from shared.db_migrations import own_tables, run_env

run_env(context, own_tables(TABLES))
