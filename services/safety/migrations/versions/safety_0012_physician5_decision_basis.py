"""the data a DLT decision relied on, and how the data stand against it now

Revision ID: safety_0012_p5_basis
Revises: safety_0011_susarclock
Create Date: 2026-12-01 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "safety_0012_p5_basis"
down_revision: str | None = "safety_0011_susarclock"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_dlts") as batch:
        batch.add_column(sa.Column("decided_relatedness", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch.add_column(sa.Column("decided_met", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("divergence", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
    # Decisions taken before this revision: the relatedness the record carries now is the best we know, and the
    # AE is taken to have met a criterion (a DLT is decided on a suspicion; only an explicit override confirms a
    # withdrawn one). `divergence` stays NULL, so a confirmed DLT whose data already meet no criterion is told
    # once, at the subject's next event.
    op.execute(
        "UPDATE safety_dlts SET decided_relatedness = relatedness, decided_met = TRUE WHERE decided_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("safety_dlts") as batch:
        batch.drop_column("divergence")
        batch.drop_column("decided_met")
        batch.drop_column("decided_relatedness")
