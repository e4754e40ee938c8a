"""safety: infusion-day vital signs, AE review records and acute reactions

Revision ID: safety_0006_protob
Revises: safety_0005_consumers
Create Date: 2026-12-01 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "safety_0006_protob"
down_revision: str | None = "safety_0005_consumers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "safety_vital_signs",
        sa.Column("trial_id", _text(64), nullable=False),
        sa.Column("subject_id", _text(200), nullable=False),
        sa.Column("vitals_id", _text(200), nullable=False),
        sa.Column("measured_at", shared.db.UTCDateTime(), nullable=False),
        sa.Column("temperature_c", _text(20), nullable=True),
        sa.Column("systolic_bp", _text(20), nullable=True),
        sa.Column("diastolic_bp", _text(20), nullable=True),
        sa.Column("heart_rate", _text(20), nullable=True),
        sa.Column("respiratory_rate", _text(20), nullable=True),
        sa.Column("spo2", _text(20), nullable=True),
        sa.Column("dose_id", _text(200), nullable=True),
        sa.Column("event_id", _text(64), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("trial_id", "subject_id", "vitals_id"),
    )
    op.create_index(op.f("ix_safety_vital_signs_measured_at"), "safety_vital_signs", ["measured_at"], unique=False)
    op.create_table(
        "safety_ae_reviews",
        sa.Column("trial_id", _text(64), nullable=False),
        sa.Column("subject_id", _text(200), nullable=False),
        sa.Column("review_id", _text(200), nullable=False),
        sa.Column("assessed_at", shared.db.UTCDateTime(), nullable=False),
        sa.Column("visit", _text(80), nullable=True),
        sa.Column("new_aes", sa.Boolean(), nullable=False),
        sa.Column("event_id", _text(64), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("trial_id", "subject_id", "review_id"),
    )
    op.create_table(
        "safety_acute_reactions",
        sa.Column("trial_id", _text(64), nullable=False),
        sa.Column("subject_id", _text(200), nullable=False),
        sa.Column("ae_id", _text(200), nullable=False),
        sa.Column("ae_version", sa.Integer(), nullable=False),
        sa.Column("term", _text(500), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("dose_id", _text(200), nullable=False),
        sa.Column("dose_number", sa.Integer(), nullable=False),
        sa.Column("infusion_at", shared.db.UTCDateTime(), nullable=False),
        sa.Column("onset", _text(10), nullable=True),
        sa.Column("onset_at", shared.db.UTCDateTime(), nullable=True),
        sa.Column("onset_precision", _text(10), nullable=False),
        sa.Column("hours_after_infusion", _text(20), nullable=True),
        sa.Column("dlt_grade", sa.Boolean(), nullable=False),
        sa.Column("reason", _text(1000), nullable=False),
        sa.Column("signalled_at", shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("trial_id", "subject_id", "ae_id"),
    )


def downgrade() -> None:
    op.drop_table("safety_acute_reactions")
    op.drop_table("safety_ae_reviews")
    op.drop_index(op.f("ix_safety_vital_signs_measured_at"), table_name="safety_vital_signs")
    op.drop_table("safety_vital_signs")
