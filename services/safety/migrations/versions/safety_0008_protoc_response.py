"""transfusions, protocol samples and haematological response states

Revision ID: safety_0008_protoc
Revises: safety_0007_protoa
Create Date: 2026-12-01 08:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from shared.db import UTCDateTime

revision: str = "safety_0008_protoc"
down_revision: str | None = "safety_0007_protoa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key() -> list[sa.Column[str]]:
    return [
        sa.Column("trial_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("subject_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "safety_transfusions",
        *_key(),
        sa.Column("transfusion_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("product", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("administered_at", UTCDateTime(), nullable=False),
        sa.Column("units", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("volume_ml", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.PrimaryKeyConstraint("trial_id", "subject_id", "transfusion_id"),
    )
    op.create_table(
        "safety_samples",
        *_key(),
        sa.Column("sample_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("collected_at", UTCDateTime(), nullable=False),
        sa.Column("visit", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
        sa.PrimaryKeyConstraint("trial_id", "subject_id", "sample_id"),
    )
    op.create_table(
        "safety_responses",
        *_key(),
        sa.Column("point", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("confirmed_at", UTCDateTime(), nullable=True),
        sa.Column("as_of", UTCDateTime(), nullable=False),
        sa.Column("duration_days", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("awaiting", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("trial_id", "subject_id", "point"),
    )


def downgrade() -> None:
    op.drop_table("safety_responses")
    op.drop_table("safety_samples")
    op.drop_table("safety_transfusions")
