"""the criterion an officer's DLT decision judged

Revision ID: safety_0009_decided
Revises: safety_0008_protoc
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "safety_0009_decided"
down_revision: str | None = "safety_0008_protoc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_dlts") as batch:
        batch.add_column(sa.Column("decided_criterion", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True))
    # Decisions taken before this revision judged the criterion the record carries now (the best we know).
    op.execute("UPDATE safety_dlts SET decided_criterion = criterion WHERE decided_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("safety_dlts") as batch:
        batch.drop_column("decided_criterion")
