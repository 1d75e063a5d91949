"""kpi_sample indexed by month and value: a period's values next to a median's pivot.

An incremental refresh moves a period's median or percentile by the few samples next to its
stored pivot instead of ranking the period again. Read month by month from (kpi, breakdown,
month, value), those are an index seek each; the index also serves what the one on (kpi,
breakdown, month) it replaces did.

Revision ID: a8c0e2f4b6d1
Revises: d2f4a6c8e0b1
Create Date: 2026-12-09 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a8c0e2f4b6d1"
down_revision: str | None = "d2f4a6c8e0b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_kpi_sample_kpi_id_dimension_month_value"),
        "kpi_sample",
        ["kpi_id", "dimension", "month", "value"],
    )
    op.drop_index(op.f("ix_kpi_sample_kpi_id_dimension_month"), table_name="kpi_sample")


def downgrade() -> None:
    op.create_index(
        op.f("ix_kpi_sample_kpi_id_dimension_month"), "kpi_sample", ["kpi_id", "dimension", "month"]
    )
    op.drop_index(op.f("ix_kpi_sample_kpi_id_dimension_month_value"), table_name="kpi_sample")
