"""Scorecard perspectives: each stored score keeps its perspectives' sub-scores.

Revision ID: f7b2c4d6e8a1
Revises: e5f1a3b7c9d2
Create Date: 2026-12-06 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f7b2c4d6e8a1"
down_revision: str | None = "e5f1a3b7c9d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("scorecard_value", schema=None) as batch_op:
        batch_op.add_column(sa.Column("perspectives", json, nullable=True))
    # Scores stored before perspectives existed had none.
    op.execute("UPDATE scorecard_value SET perspectives = '[]'")
    with op.batch_alter_table("scorecard_value", schema=None) as batch_op:
        batch_op.alter_column("perspectives", existing_type=json, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("scorecard_value", schema=None) as batch_op:
        batch_op.drop_column("perspectives")
