"""safety: expedited-reporting (SUSAR) cases

Revision ID: safety_0002_susar
Revises: safety_0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "safety_0002_susar"
down_revision: str | None = "safety_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "safety_susar_cases",
        sa.Column("trial_id", _text(64), nullable=False),
        sa.Column("subject_id", _text(200), nullable=False),
        sa.Column("ae_id", _text(200), nullable=False),
        sa.Column("term", _text(500), nullable=False),
        sa.Column("meddra_code", _text(8), nullable=True),
        sa.Column("site_relatedness", _text(20), nullable=True),
        sa.Column("site_relatedness_version", sa.Integer(), nullable=False),
        sa.Column("proposed_expectedness", _text(20), nullable=False),
        sa.Column("proposed_reason", _text(1000), nullable=False),
        sa.Column("rsi_version", _text(40), nullable=False),
        sa.Column("confirmed_expectedness", _text(20), nullable=True),
        sa.Column("expectedness_by", _text(200), nullable=True),
        sa.Column("expectedness_at", shared.db.UTCDateTime(), nullable=True),
        sa.Column("expectedness_reason", _text(2000), nullable=True),
        sa.Column("sponsor_causality", _text(20), nullable=True),
        sa.Column("causality_by", _text(200), nullable=True),
        sa.Column("causality_at", shared.db.UTCDateTime(), nullable=True),
        sa.Column("causality_reason", _text(2000), nullable=True),
        sa.Column("susar", sa.Boolean(), nullable=False),
        sa.Column("clock_start", shared.db.UTCDateTime(), nullable=True),
        sa.Column("clock_basis", _text(200), nullable=True),
        sa.Column("fatal_or_life_threatening", sa.Boolean(), nullable=False),
        sa.Column("upgraded_at", shared.db.UTCDateTime(), nullable=True),
        sa.Column("signalled_version", sa.Integer(), nullable=False),
        sa.Column("narrative", sa.Text(), nullable=True),
        sa.Column("narrative_by", _text(200), nullable=True),
        sa.Column("narrative_at", shared.db.UTCDateTime(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("trial_id", "subject_id", "ae_id"),
    )


def downgrade() -> None:
    op.drop_table("safety_susar_cases")
