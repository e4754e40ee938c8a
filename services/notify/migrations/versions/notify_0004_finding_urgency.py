"""a dispatch class between critical and page, for a grade >= 3 finding a site has just entered: critical moves to -2

Revision ID: notify_0004_finding
Revises: notify_0003_ops
Create Date: 2026-12-01 21:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "notify_0004_finding"
down_revision: str | None = "notify_0003_ops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # every row classed critical (-1) before, sent or pending, keeps its meaning under the new number
    op.execute("UPDATE notify_deliveries SET urgency = -2 WHERE urgency = -1")


def downgrade() -> None:
    op.execute("UPDATE notify_deliveries SET urgency = 0 WHERE urgency = -1")  # a live finding's page: a page
    op.execute("UPDATE notify_deliveries SET urgency = -1 WHERE urgency = -2")
