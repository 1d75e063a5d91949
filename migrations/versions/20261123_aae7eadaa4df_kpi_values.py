"""Materialised KPI values (kpi_value).

Revision ID: aae7eadaa4df
Revises: 5e2bd529e26d
Create Date: 2026-11-23 09:35:54.752666
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "aae7eadaa4df"
down_revision: str | None = "5e2bd529e26d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kpi_value",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kpi_id", sa.String(length=63), nullable=False),
        sa.Column("definition_hash", sa.String(length=32), nullable=False),
        sa.Column("grain", sa.String(length=16), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.String(length=600), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("numerator", sa.Float(), nullable=False),
        sa.Column("denominator", sa.Float(), nullable=True),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("low_sample", sa.Boolean(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kpi_value")),
        sa.UniqueConstraint(
            "kpi_id",
            "grain",
            "period_key",
            "scope",
            "scope_id",
            "currency",
            name=op.f("uq_kpi_value_kpi_id_grain_period_key_scope_scope_id_currency"),
        ),
    )
    with op.batch_alter_table("kpi_value", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_kpi_value_kpi_id_grain_scope_period_start"),
            ["kpi_id", "grain", "scope", "period_start"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("kpi_value", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kpi_value_kpi_id_grain_scope_period_start"))

    op.drop_table("kpi_value")
