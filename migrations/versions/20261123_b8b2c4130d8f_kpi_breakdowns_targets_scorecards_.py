"""KPI breakdowns, targets, scorecards and refresh state; the store's change log.

kpi_value gains breakdown and target columns (existing rows stay, as totals). The change log
(store_change_batch, prior_opportunity, prior_lead) feeds incremental KPI refreshes.

Revision ID: b8b2c4130d8f
Revises: aae7eadaa4df
Create Date: 2026-11-23 11:03:26.702545
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b8b2c4130d8f"
down_revision: str | None = "aae7eadaa4df"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kpi_refresh_state",
        sa.Column("kpi_id", sa.String(length=63), nullable=False),
        sa.Column("definition_hash", sa.String(length=32), nullable=False),
        sa.Column("context_hash", sa.String(length=32), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kpi_id", name=op.f("pk_kpi_refresh_state")),
    )
    op.create_table(
        "kpi_target",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kpi_id", sa.String(length=63), nullable=False),
        sa.Column("grain", sa.String(length=16), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.String(length=600), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kpi_target")),
        sa.UniqueConstraint(
            "kpi_id",
            "grain",
            "period_key",
            "scope",
            "scope_id",
            "currency",
            name=op.f("uq_kpi_target_kpi_id_grain_period_key_scope_scope_id_currency"),
        ),
    )
    op.create_table(
        "prior_lead",
        sa.Column("change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("connection_id", sa.String(length=63), nullable=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("owner_external_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("company", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_converted", sa.Boolean(), nullable=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("converted_opportunity_external_id", sa.String(length=255), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remote_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "custom",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "raw",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("content_hash", sa.String(length=32), nullable=True),
        sa.Column("first_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_prior_lead")),
    )
    op.create_table(
        "prior_opportunity",
        sa.Column("change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("connection_id", sa.String(length=63), nullable=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("owner_external_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column(
            "amount", sa.Numeric(precision=18, scale=2).with_variant(sa.Float(), "sqlite"), nullable=True
        ),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("stage", sa.String(length=255), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("pipeline", sa.String(length=255), nullable=True),
        sa.Column("forecast_category", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=255), nullable=True),
        sa.Column("lead_source", sa.String(length=255), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=True),
        sa.Column("product", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_date", sa.Date(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_closed", sa.Boolean(), nullable=True),
        sa.Column("is_won", sa.Boolean(), nullable=True),
        sa.Column("lead_external_id", sa.String(length=255), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remote_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "custom",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "raw",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("content_hash", sa.String(length=32), nullable=True),
        sa.Column("first_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_prior_opportunity")),
    )
    op.create_table(
        "scorecard_value",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("scorecard_id", sa.String(length=63), nullable=False),
        sa.Column("definition_hash", sa.String(length=32), nullable=False),
        sa.Column("grain", sa.String(length=16), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("scope_id", sa.String(length=600), nullable=False),
        sa.Column("team_id", sa.String(length=600), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("grade", sa.String(length=16), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("team_rank", sa.Integer(), nullable=True),
        sa.Column("dropped_components", sa.Integer(), nullable=False),
        sa.Column(
            "components",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scorecard_value")),
        sa.UniqueConstraint(
            "scorecard_id",
            "grain",
            "period_key",
            "scope_id",
            name=op.f("uq_scorecard_value_scorecard_id_grain_period_key_scope_id"),
        ),
    )
    with op.batch_alter_table("scorecard_value", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scorecard_value_scorecard_id_grain_period_start"),
            ["scorecard_id", "grain", "period_start"],
            unique=False,
        )

    op.create_table(
        "store_change_batch",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.String(length=63), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_change_batch")),
    )
    with op.batch_alter_table("store_change_batch", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_store_change_batch_entity_connection_id_synced_at"),
            ["entity", "connection_id", "synced_at"],
            unique=False,
        )

    with op.batch_alter_table("kpi_value", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dimension", sa.String(length=63), nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("dimension_value", sa.String(length=255), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("target", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("attainment", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("gap", sa.Float(), nullable=True))
        batch_op.drop_constraint(
            batch_op.f("uq_kpi_value_kpi_id_grain_period_key_scope_scope_id_currency"), type_="unique"
        )
        batch_op.create_unique_constraint(
            "uq_kpi_value_key",
            [
                "kpi_id",
                "grain",
                "period_key",
                "scope",
                "scope_id",
                "currency",
                "dimension",
                "dimension_value",
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("kpi_value", schema=None) as batch_op:
        batch_op.drop_constraint("uq_kpi_value_key", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_kpi_value_kpi_id_grain_period_key_scope_scope_id_currency"),
            ["kpi_id", "grain", "period_key", "scope", "scope_id", "currency"],
        )
        batch_op.drop_column("gap")
        batch_op.drop_column("attainment")
        batch_op.drop_column("target")
        batch_op.drop_column("dimension_value")
        batch_op.drop_column("dimension")

    with op.batch_alter_table("store_change_batch", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_store_change_batch_entity_connection_id_synced_at"))

    op.drop_table("store_change_batch")
    with op.batch_alter_table("scorecard_value", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scorecard_value_scorecard_id_grain_period_start"))

    op.drop_table("scorecard_value")
    op.drop_table("prior_opportunity")
    op.drop_table("prior_lead")
    op.drop_table("kpi_target")
    op.drop_table("kpi_refresh_state")
