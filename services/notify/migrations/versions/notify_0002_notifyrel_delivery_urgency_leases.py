"""deliveries: urgency (pages first, digests), lease holder (heartbeat), attempt start (crash-safe retries)

Revision ID: notify_0002_notifyrel
Revises: notify_0001
Create Date: 2026-12-01 07:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "notify_0002_notifyrel"
down_revision: str | None = "notify_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notify_deliveries") as batch:
        batch.add_column(sa.Column("urgency", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("leased_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch.add_column(sa.Column("attempt_started_at", shared.db.UTCDateTime(), nullable=True))
    op.create_index(op.f("ix_notify_deliveries_urgency"), "notify_deliveries", ["urgency"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_notify_deliveries_urgency"), table_name="notify_deliveries")
    with op.batch_alter_table("notify_deliveries") as batch:
        batch.drop_column("attempt_started_at")
        batch.drop_column("leased_by")
        batch.drop_column("urgency")
