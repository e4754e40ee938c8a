"""per-subject 3+3 outcomes, the recommended dose, the site offset of doses, arm tallies

Revision ID: safety_0003_clinical
Revises: safety_0002_susar
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "safety_0003_clinical"
down_revision: str | None = "safety_0002_susar"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TALLIES = (
    "not_evaluable",
    "replacements_needed",
    "under_review",
    "subjects_confirmed",
    "subjects_suspected",
    "events_confirmed",
    "events_suspected",
)


def upgrade() -> None:
    op.create_table(
        "safety_subject_outcomes",
        sa.Column("trial_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("subject_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("arm", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("dlt_confirmed", sa.Integer(), nullable=False),
        sa.Column("dlt_suspected", sa.Integer(), nullable=False),
        sa.Column("infusions_given", sa.Integer(), nullable=False),
        sa.Column("infusions_planned", sa.Integer(), nullable=False),
        sa.Column("evaluable_at", shared.db.UTCDateTime(), nullable=True),
        sa.Column("changes_at", shared.db.UTCDateTime(), nullable=True),
        sa.Column("first_dlt_on", sa.Date(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("study_status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("study_status_on", sa.Date(), nullable=True),
        sa.Column("study_status_reason", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("study_status_event_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("trial_id", "subject_id"),
    )
    op.create_index(op.f("ix_safety_subject_outcomes_arm"), "safety_subject_outcomes", ["arm"], unique=False)
    op.create_index(
        op.f("ix_safety_subject_outcomes_changes_at"), "safety_subject_outcomes", ["changes_at"], unique=False
    )
    op.create_table(
        "safety_dose_recommendations",
        sa.Column("trial_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("recommended_arm", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("basis", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("trial_id"),
    )
    op.add_column("safety_doses", sa.Column("utc_offset_minutes", sa.Integer(), nullable=True))
    with op.batch_alter_table("safety_cohorts") as batch:
        for name in TALLIES:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("safety_cohorts") as batch:
        for name in TALLIES:
            batch.drop_column(name)
    op.drop_column("safety_doses", "utc_offset_minutes")
    op.drop_table("safety_dose_recommendations")
    op.drop_index(op.f("ix_safety_subject_outcomes_changes_at"), table_name="safety_subject_outcomes")
    op.drop_index(op.f("ix_safety_subject_outcomes_arm"), table_name="safety_subject_outcomes")
    op.drop_table("safety_subject_outcomes")
