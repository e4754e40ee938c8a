"""the last response whose loss was signalled

Revision ID: safety_0010_losses
Revises: safety_0009_decided
Create Date: 2026-12-01 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision: str = "safety_0010_losses"
down_revision: str | None = "safety_0009_decided"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_responses") as batch:
        batch.add_column(sa.Column("lost_signalled_since", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("safety_responses") as batch:
        batch.drop_column("lost_signalled_since")
