"""Incentives: payout lines per plan, rep and period; closed periods and what they were made of.

incentive_line holds every line of the reps' statements (payouts and adjustments; a closed
period's lines are frozen); incentive_period_close the periods an admin closed;
incentive_closed_record the records behind each closed payout as they were at the close;
incentive_plan_state what each plan's open lines were computed with.

Revision ID: b4d6f8a0c2e3
Revises: e5b7c3d1a942
Create Date: 2026-12-07 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b4d6f8a0c2e3"
down_revision: str | None = "e5b7c3d1a942"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(precision=18, scale=2).with_variant(sa.Float(), "sqlite")
#: Exact on both: NUMERIC on PostgreSQL, the decimal's text on SQLite (which has no decimal type).
EXACT = sa.Numeric(precision=18, scale=6).with_variant(sa.String(40), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "incentive_line",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("plan_id", sa.String(length=63), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("owner_id", sa.String(length=600), nullable=False),
        sa.Column("component_id", sa.String(length=63), nullable=False),
        sa.Column("component_type", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("for_period_key", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("base", MONEY, nullable=True),
        sa.Column("quota", MONEY, nullable=True),
        sa.Column("attainment", sa.Float(), nullable=True),
        sa.Column("rate", EXACT, nullable=True),
        sa.Column("units", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("grade", sa.String(length=63), nullable=True),
        sa.Column("capped", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incentive_line")),
        sa.UniqueConstraint(
            "plan_id",
            "period_key",
            "owner_id",
            "component_id",
            "kind",
            "for_period_key",
            name="uq_incentive_line_key",
        ),
    )
    with op.batch_alter_table("incentive_line", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_incentive_line_plan_id_owner_id_period_key"),
            ["plan_id", "owner_id", "period_key"],
            unique=False,
        )
    op.create_table(
        "incentive_period_close",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("plan_id", sa.String(length=63), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incentive_period_close")),
        sa.UniqueConstraint("plan_id", "period_key", name="uq_incentive_period_close_key"),
    )
    op.create_table(
        "incentive_plan_state",
        sa.Column("plan_id", sa.String(length=63), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_incentive_plan_state")),
    )
    op.create_table(
        "incentive_closed_record",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("close_id", BIG_ID, nullable=False),
        sa.Column("owner_id", sa.String(length=600), nullable=False),
        sa.Column("component_id", sa.String(length=63), nullable=False),
        sa.Column("connection_id", sa.String(length=63), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("contribution", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["close_id"],
            ["incentive_period_close.id"],
            name=op.f("fk_incentive_closed_record_close_id_incentive_period_close"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incentive_closed_record")),
    )
    with op.batch_alter_table("incentive_closed_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_incentive_closed_record_close_id_owner_id_component_id"),
            ["close_id", "owner_id", "component_id"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("incentive_closed_record")
    op.drop_table("incentive_plan_state")
    op.drop_table("incentive_period_close")
    op.drop_table("incentive_line")
