"""subjects: the enrolment data eligibility is judged on (CAR-T date, weight, history) and the verdict signalled

Revision ID: safety_0007_protoa
Revises: safety_0006_protob
Create Date: 2026-12-01 08:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "safety_0007_protoa"
down_revision: str | None = "safety_0006_protob"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_subjects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("car_t_infused_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("weight_kg", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("screening_history", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("eligibility_signalled", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("safety_subjects", schema=None) as batch_op:
        batch_op.drop_column("eligibility_signalled")
        batch_op.drop_column("screening_history")
        batch_op.drop_column("weight_kg")
        batch_op.drop_column("car_t_infused_on")
