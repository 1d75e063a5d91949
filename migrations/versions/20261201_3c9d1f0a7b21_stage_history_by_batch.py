"""Incremental medians and funnels: the ranked values of percentile KPIs, stage history by batch.

kpi_sample keeps each record's value for the median and percentile KPIs, so that an incremental
refresh ranks the periods a change touches from it, and kpi_value keeps the rank state of
all-time medians and percentiles, from which it moves them; stage history gains an index on the
batch that recorded it, through which an incremental refresh finds the deals whose funnel steps
changed.

Revision ID: 3c9d1f0a7b21
Revises: b8b2c4130d8f
Create Date: 2026-12-01 08:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3c9d1f0a7b21"
down_revision: str | None = "b8b2c4130d8f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_stage_change_connection_id_recorded_at"),
        "stage_change",
        ["connection_id", "recorded_at"],
        unique=False,
    )
    op.create_table(
        "kpi_sample",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kpi_id", sa.String(length=63), nullable=False),
        sa.Column("dimension", sa.String(length=63), nullable=False),
        sa.Column("connection_id", sa.String(length=63), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("week", sa.Integer(), nullable=True),
        sa.Column("month", sa.Integer(), nullable=True),
        sa.Column("owner_external_id", sa.String(length=255), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("dimension_value", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kpi_sample")),
        sa.UniqueConstraint(
            "kpi_id",
            "dimension",
            "connection_id",
            "external_id",
            name=op.f("uq_kpi_sample_kpi_id_dimension_connection_id_external_id"),
        ),
    )
    op.create_index(
        op.f("ix_kpi_sample_kpi_id_dimension_month"), "kpi_sample", ["kpi_id", "dimension", "month"]
    )
    op.create_index(
        op.f("ix_kpi_sample_kpi_id_dimension_value"), "kpi_sample", ["kpi_id", "dimension", "value"]
    )
    with op.batch_alter_table("kpi_value") as batch:
        batch.add_column(sa.Column("rank_pivot", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rank_below", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rank_equal", sa.Integer(), nullable=True))
    # Values computed before this revision have no samples: recompute them on the next refresh.
    op.execute("DELETE FROM kpi_refresh_state")


def downgrade() -> None:
    with op.batch_alter_table("kpi_value") as batch:
        batch.drop_column("rank_equal")
        batch.drop_column("rank_below")
        batch.drop_column("rank_pivot")
    op.drop_index(op.f("ix_kpi_sample_kpi_id_dimension_value"), table_name="kpi_sample")
    op.drop_index(op.f("ix_kpi_sample_kpi_id_dimension_month"), table_name="kpi_sample")
    op.drop_table("kpi_sample")
    op.drop_index(op.f("ix_stage_change_connection_id_recorded_at"), table_name="stage_change")
