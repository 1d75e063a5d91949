"""The inbox of changes the CRMs push, written before a push is acknowledged.

Revision ID: d2f4a6c8e0b1
Revises: c7e9a1b3d5f0
Create Date: 2026-12-08 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d2f4a6c8e0b1"
down_revision: str | None = "c7e9a1b3d5f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ingest_event",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("connection_id", sa.String(length=63), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("stream", sa.String(length=63), nullable=False),
        sa.Column("external_id", sa.String(length=600), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connection.id"],
            name=op.f("fk_ingest_event_connection_id_connection"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_event")),
        sa.UniqueConstraint("connection_id", "event_id", name="uq_ingest_event_key"),
    )
    with op.batch_alter_table("ingest_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingest_event_status_connection_id_id"),
            ["status", "connection_id", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("ingest_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_event_status_connection_id_id"))
    op.drop_table("ingest_event")
