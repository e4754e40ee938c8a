"""Alembic environment of the `shared` component: inbox, outbox and audit tables."""

from alembic import context

from shared.db_migrations import run_env, shared_tables

run_env(context, shared_tables())
