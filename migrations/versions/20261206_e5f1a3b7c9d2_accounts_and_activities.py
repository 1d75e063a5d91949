"""Accounts and activities: the customers deals belong to and what reps do, with their change log.

Opportunities' ``account`` becomes ``account_external_id`` (it always held the account's id, or its
name where the CRM names accounts only by name), and leads gain the same link.

Revision ID: e5f1a3b7c9d2
Revises: c4d2a9e1f7b3
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e5f1a3b7c9d2"
down_revision: str | None = "c4d2a9e1f7b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _text(name: str, length: int = 255, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _at(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _account_columns(prior: bool) -> list[sa.Column[object]]:
    required = not prior
    return [
        _text("connection_id", 63, nullable=prior),
        _text("external_id", nullable=prior),
        _text("name"),
        _text("owner_external_id"),
        _text("industry"),
        _text("segment"),
        _text("parent_external_id"),
        _at("created_at"),
        sa.Column("is_deleted", sa.Boolean(), nullable=not required),
        _at("deleted_at"),
        _at("remote_updated_at"),
        sa.Column("custom", _json(), nullable=not required),
        sa.Column("raw", _json(), nullable=True),
        _text("content_hash", 32, nullable=prior),
        _at("first_synced_at", nullable=prior),
        _at("synced_at", nullable=prior),
    ]  # type: ignore[return-value]


def _activity_columns(prior: bool) -> list[sa.Column[object]]:
    required = not prior
    return [
        _text("connection_id", 63, nullable=prior),
        _text("external_id", nullable=prior),
        _text("type", 63, nullable=prior),
        _text("subtype"),
        _text("owner_external_id"),
        _text("subject"),
        _at("occurred_at", nullable=prior),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        _text("outcome"),
        sa.Column("is_completed", sa.Boolean(), nullable=not required),
        _text("account_external_id"),
        _text("opportunity_external_id"),
        _text("lead_external_id"),
        _at("created_at"),
        sa.Column("is_deleted", sa.Boolean(), nullable=not required),
        _at("deleted_at"),
        _at("remote_updated_at"),
        sa.Column("custom", _json(), nullable=not required),
        sa.Column("raw", _json(), nullable=True),
        _text("content_hash", 32, nullable=prior),
        _at("first_synced_at", nullable=prior),
        _at("synced_at", nullable=prior),
    ]  # type: ignore[return-value]


def _entity_table(name: str, columns: list[sa.Column[object]]) -> None:
    op.create_table(
        name,
        sa.Column("id", _id(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connection.id"],
            name=op.f(f"fk_{name}_connection_id_connection"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint(
            "connection_id", "external_id", name=op.f(f"uq_{name}_connection_id_external_id")
        ),
    )
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f"ix_{name}_synced_at"), ["synced_at"], unique=False)


def _prior_table(name: str, columns: list[sa.Column[object]]) -> None:
    op.create_table(
        name,
        sa.Column("change_id", _id(), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("change_id", name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    _entity_table("account", _account_columns(prior=False))
    _entity_table("activity", _activity_columns(prior=False))
    _prior_table("prior_account", _account_columns(prior=True))
    _prior_table("prior_activity", _activity_columns(prior=True))
    for table in ("opportunity", "prior_opportunity"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("account", new_column_name="account_external_id")
    for table in ("lead", "prior_lead"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(_text("account_external_id"))


def downgrade() -> None:
    for table in ("lead", "prior_lead"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("account_external_id")
    for table in ("opportunity", "prior_opportunity"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("account_external_id", new_column_name="account")
    for name in ("prior_activity", "prior_account", "activity", "account"):
        op.drop_table(name)
