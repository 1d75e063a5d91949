"""Incentive plans set through the API, next to the configuration's.

Revision ID: c7e9a1b3d5f0
Revises: b4d6f8a0c2e3
Create Date: 2026-12-07 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c7e9a1b3d5f0"
down_revision: str | None = "b4d6f8a0c2e3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "incentive_plan_definition",
        sa.Column("plan_id", sa.String(length=63), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_incentive_plan_definition")),
    )


def downgrade() -> None:
    op.drop_table("incentive_plan_definition")
