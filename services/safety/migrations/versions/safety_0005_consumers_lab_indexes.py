"""safety_labs: indexes for a result's baseline and a term's results

Revision ID: safety_0005_consumers
Revises: safety_0004_labs
Create Date: 2026-12-01 07:55:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "safety_0005_consumers"
down_revision: str | None = "safety_0004_labs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_labs", schema=None) as batch_op:
        batch_op.create_index("ix_safety_labs_test", ["trial_id", "subject_id", "test", "collected_at"], unique=False)
        batch_op.create_index("ix_safety_labs_term", ["trial_id", "subject_id", "term", "collected_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("safety_labs", schema=None) as batch_op:
        batch_op.drop_index("ix_safety_labs_term")
        batch_op.drop_index("ix_safety_labs_test")
