"""kpi_sample indexed for the values next to a median's pivot, in a period and for a rep.

An incremental refresh moves a period's median or percentile by the few samples next to its
stored pivot instead of ranking the period again. Read month by month from (kpi, breakdown,
month, value), those are an index seek each; that index also serves what the one on (kpi,
breakdown, month) it replaces did. A rep's values are a sliver of all: read through the value
index they were found by scanning past everyone else's, so a rep's cells have their own
indexes, all time and month by month. These begin with the rep: beginning with the KPI, they
were taken by SQLite for the other cells' counts too, as a scan of the KPI's samples.

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

OWNER_CELL = ["owner_external_id", "connection_id", "kpi_id", "dimension", "currency", "dimension_value"]


def upgrade() -> None:
    op.create_index(
        op.f("ix_kpi_sample_kpi_id_dimension_month_value"),
        "kpi_sample",
        ["kpi_id", "dimension", "month", "value"],
    )
    op.drop_index(op.f("ix_kpi_sample_kpi_id_dimension_month"), table_name="kpi_sample")
    op.create_index("ix_kpi_sample_owner_value", "kpi_sample", [*OWNER_CELL, "value"])
    op.create_index("ix_kpi_sample_owner_month_value", "kpi_sample", [*OWNER_CELL, "month", "value"])


def downgrade() -> None:
    op.drop_index("ix_kpi_sample_owner_month_value", table_name="kpi_sample")
    op.drop_index("ix_kpi_sample_owner_value", table_name="kpi_sample")
    op.create_index(
        op.f("ix_kpi_sample_kpi_id_dimension_month"), "kpi_sample", ["kpi_id", "dimension", "month"]
    )
    op.drop_index(op.f("ix_kpi_sample_kpi_id_dimension_month_value"), table_name="kpi_sample")
