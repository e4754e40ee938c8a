"""A subject's lab term numbers its toxicity signals: notify tells a late signal from news by the order raised

`safety_lab_terms.signals_raised`: how many lab.toxicity signals safety raised for the subject's term; each signal
carries its number (`LabToxicityData.sequence`). Existing terms start at 0: their signals already sent carry no
number, and notify compares those by grade as before.

Revision ID: safety_0015_lab_signal_seq
Revises: safety_0014_c7_decided_event
Create Date: 2026-12-01 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "safety_0015_lab_signal_seq"
down_revision: str | None = "safety_0014_c7_decided_event"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_lab_terms") as batch:
        batch.add_column(sa.Column("signals_raised", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("safety_lab_terms") as batch:
        batch.drop_column("signals_raised")
