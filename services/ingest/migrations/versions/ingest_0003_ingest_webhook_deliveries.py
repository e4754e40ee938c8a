"""webhook ids with the hash of the body first accepted under them (a different body is refused)

Revision ID: ingest_0003
Revises: ingest_0002
Create Date: 2026-12-01 07:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "ingest_0003"
down_revision: str | None = "ingest_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_webhook_deliveries",
        sa.Column("source_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("webhook_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("body_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("accepted_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "webhook_id"),
    )
    with op.batch_alter_table("ingest_webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ingest_webhook_deliveries_accepted_at"), ["accepted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ingest_webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_webhook_deliveries_accepted_at"))
    op.drop_table("ingest_webhook_deliveries")
