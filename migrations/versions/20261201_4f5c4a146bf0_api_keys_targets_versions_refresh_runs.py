"""API keys, targets set through the API, result versions and the refresh log.

api_key holds the REST API's bearer keys (hashed); target_definition the targets set through
the API; kpi_refresh_state.values_changed_at and scorecard_state the version readers cache
against (ETag, Last-Modified); kpi_refresh_run one row per KPI refresh.

Revision ID: 4f5c4a146bf0
Revises: 3c9d1f0a7b21
Create Date: 2026-12-01 08:30:30.365665
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "4f5c4a146bf0"
down_revision: str | None = "3c9d1f0a7b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("display_key", sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
    )
    op.create_table(
        "kpi_refresh_run",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("values_written", sa.Integer(), nullable=False),
        sa.Column("recomputed", JSON_DOC, nullable=False),
        sa.Column("updated", JSON_DOC, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kpi_refresh_run")),
    )
    op.create_index(op.f("ix_kpi_refresh_run_started_at"), "kpi_refresh_run", ["started_at"])
    op.create_table(
        "scorecard_state",
        sa.Column("scorecard_id", sa.String(length=63), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scorecard_id", name=op.f("pk_scorecard_state")),
    )
    op.create_table(
        "target_definition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kpi_id", sa.String(length=63), nullable=False),
        sa.Column("definition", JSON_DOC, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_target_definition")),
    )
    op.create_index(op.f("ix_target_definition_kpi_id"), "target_definition", ["kpi_id"])
    with op.batch_alter_table("kpi_refresh_state") as batch:
        batch.add_column(sa.Column("values_changed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kpi_refresh_state") as batch:
        batch.drop_column("values_changed_at")
    op.drop_index(op.f("ix_target_definition_kpi_id"), table_name="target_definition")
    op.drop_table("target_definition")
    op.drop_table("scorecard_state")
    op.drop_index(op.f("ix_kpi_refresh_run_started_at"), table_name="kpi_refresh_run")
    op.drop_table("kpi_refresh_run")
    op.drop_table("api_key")
