"""Alembic environment of the notify service's own tables."""

from alembic import context

from services.notify.models import TABLES
from shared.db_migrations import own_tables, run_env

run_env(context, own_tables(TABLES))
