"""SUSAR cases: the sponsor's assessments as a log, so the clock is replayed from what was known when

Revision ID: safety_0011_susarclock
Revises: safety_0010_losses
Create Date: 2026-12-01 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "safety_0011_susarclock"
down_revision: str | None = "safety_0010_losses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_susar_cases") as batch:
        batch.add_column(sa.Column("assessments", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("safety_susar_cases") as batch:
        batch.drop_column("assessments")
