"""outbox: index for the relay's pending rows

Revision ID: shared_0003_consumers
Revises: shared_0002_ops
Create Date: 2026-12-01 07:55:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "shared_0003_consumers"
down_revision: str | None = "shared_0002_ops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_pending", ["producer", "sent_at", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_pending")
