"""The decision on file and the event it was about: a confirmation does not carry over to a recoded AE

`safety_dlts.decided_state`: the officer's decision ('confirmed', 'rejected'), which the record's state may no longer
show when new data reopened it as a suspicion. `safety_dlts.decided_term`: the AE's CTCAE term when decided.
Existing decided records: the state they hold, or 'rejected' when reopened (only a rejection could reopen before);
their current term.

Revision ID: safety_0014_c7_decided_event
Revises: safety_0013_saecase_reentry
Create Date: 2026-12-01 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "safety_0014_c7_decided_event"
down_revision: str | None = "safety_0013_saecase_reentry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("safety_dlts") as batch:
        batch.add_column(sa.Column("decided_state", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch.add_column(sa.Column("decided_term", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
    op.execute(
        "UPDATE safety_dlts SET decided_term = term, decided_state = CASE WHEN state IN ('confirmed', 'rejected') "
        "THEN state ELSE 'rejected' END WHERE decided_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("safety_dlts") as batch:
        batch.drop_column("decided_term")
        batch.drop_column("decided_state")
