"""labs: floor-grade marker and the anticoagulation flag INR grading reads

Revision ID: safety_0004_labs
Revises: safety_0003_clinical
Create Date: 2026-12-01 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "safety_0004_labs"
down_revision: str | None = "safety_0003_clinical"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_labs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anticoagulated", sa.Boolean(), nullable=True))
        # Results graded before floors existed were exact grades or ungraded: false is true of them.
        batch_op.add_column(sa.Column("grade_floor", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("safety_labs", schema=None) as batch_op:
        batch_op.drop_column("grade_floor")
        batch_op.drop_column("anticoagulated")
