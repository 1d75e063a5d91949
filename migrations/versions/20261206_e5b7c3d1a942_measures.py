"""Measures: numbers from outside the CRM entered by people, and every change to them.

measure_entry holds the value of a measure per scope, grain and period (one row each);
measure_change keeps every creation, change and removal with the old and new value, who and when.

Revision ID: e5b7c3d1a942
Revises: f7b2c4d6e8a1
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5b7c3d1a942"
down_revision: str | None = "f7b2c4d6e8a1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Exact on both: NUMERIC on PostgreSQL, the decimal's text on SQLite (which has no decimal type).
EXACT = sa.Numeric(precision=18, scale=6).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    op.create_table(
        "measure_entry",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("measure_id", sa.String(length=63), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.String(length=600), nullable=False),
        sa.Column("grain", sa.String(length=16), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("value", EXACT, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("entered_by", sa.String(length=200), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measure_entry")),
        sa.UniqueConstraint(
            "measure_id", "scope", "scope_id", "grain", "period_key", name="uq_measure_entry_key"
        ),
    )
    op.create_index(
        op.f("ix_measure_entry_measure_id_grain_period_start"),
        "measure_entry",
        ["measure_id", "grain", "period_start"],
    )
    op.create_table(
        "measure_change",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("measure_id", sa.String(length=63), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.String(length=600), nullable=False),
        sa.Column("grain", sa.String(length=16), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("old_value", EXACT, nullable=True),
        sa.Column("new_value", EXACT, nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measure_change")),
    )
    op.create_index(
        op.f("ix_measure_change_measure_id_scope_id_grain_period_key"),
        "measure_change",
        ["measure_id", "scope_id", "grain", "period_key"],
    )
    op.create_index(op.f("ix_measure_change_changed_at"), "measure_change", ["changed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_measure_change_changed_at"), table_name="measure_change")
    op.drop_index(op.f("ix_measure_change_measure_id_scope_id_grain_period_key"), table_name="measure_change")
    op.drop_table("measure_change")
    op.drop_index(op.f("ix_measure_entry_measure_id_grain_period_start"), table_name="measure_entry")
    op.drop_table("measure_entry")
