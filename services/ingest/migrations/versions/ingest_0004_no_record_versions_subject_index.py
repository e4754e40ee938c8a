"""no index on ingest_record_versions.subject: it doubled the pages every accepted record writes

Revision ID: ingest_0004
Revises: ingest_0003
Create Date: 2026-12-02 00:30:00.000000

Each accepted record upserts its version row; keys of many subjects in one request land on as many leaf pages of the
primary key and, again, of this index (about 16 us of ingest's CPU per event on SQLite, a fifth of a 100-event post).
Its one reader, a REDCap record deleted at the source (`store.subject_records`), is rare and now reads the source's
rows through the primary key.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ingest_0004"
down_revision: str | None = "ingest_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_record_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_record_versions_subject"))


def downgrade() -> None:
    with op.batch_alter_table("ingest_record_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ingest_record_versions_subject"), ["subject"], unique=False)
