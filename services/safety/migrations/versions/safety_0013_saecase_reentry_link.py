"""An AE re-entered under a new id keeps the first record's clock; a version delivered late is told by its entry time

`safety_record_status.replaced_by`: the id the site re-entered a retracted record under, when it says so.
`safety_ae_versions.entered_at`: the site's entry time of a version, when its envelope carries one.

Revision ID: safety_0013_saecase_reentry
Revises: safety_0012_p5_basis
Create Date: 2026-12-01 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "safety_0013_saecase_reentry"
down_revision: str | None = "safety_0012_p5_basis"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_record_status") as batch:
        batch.add_column(sa.Column("replaced_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    with op.batch_alter_table("safety_ae_versions") as batch:
        batch.add_column(sa.Column("entered_at", shared.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("safety_ae_versions") as batch:
        batch.drop_column("entered_at")
    with op.batch_alter_table("safety_record_status") as batch:
        batch.drop_column("replaced_by")
