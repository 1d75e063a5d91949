"""An index on an opportunity's account, for reading one account's deals.

Revision ID: a3c5e7f9b1d2
Revises: e5b7c3d1a942
Create Date: 2026-12-07 06:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a3c5e7f9b1d2"
down_revision: str | None = "e5b7c3d1a942"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("opportunity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_opportunity_connection_id_account_external_id"),
            ["connection_id", "account_external_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("opportunity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_opportunity_connection_id_account_external_id"))
