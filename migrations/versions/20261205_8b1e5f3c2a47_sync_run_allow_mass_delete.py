"""A sync run records whether it was confirmed to delete more than the mass-deletion limit.

Revision ID: 8b1e5f3c2a47
Revises: 8a1c6e2f4b93
Create Date: 2026-12-05 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8b1e5f3c2a47"
down_revision: str | None = "8a1c6e2f4b93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.add_column(
            sa.Column("allow_mass_delete", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("allow_mass_delete")
