"""Warnings of a sync run: records stored with a change the operator must know of.

sync_record_error gains a level (``error`` for a record that was skipped, ``warning`` for one
stored with a change, e.g. characters no store can hold removed from its text), and sync_run
counts the warnings beside the skipped records.

Revision ID: 8a1c6e2f4b93
Revises: 9b41e7c2d5a8
Create Date: 2026-12-05 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8a1c6e2f4b93"
down_revision: str | None = "9b41e7c2d5a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_record_error") as batch:
        batch.add_column(sa.Column("level", sa.String(length=8), server_default="error", nullable=False))
    with op.batch_alter_table("sync_run") as batch:
        batch.add_column(sa.Column("warnings", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("warnings")
    with op.batch_alter_table("sync_record_error") as batch:
        batch.drop_column("level")
