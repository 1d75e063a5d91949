"""Dashboard sessions: an API key exchanged for a cookie, kept as the cookie's hash.

Revision ID: c4d2a9e1f7b3
Revises: 8b1e5f3c2a47
Create Date: 2026-12-06 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4d2a9e1f7b3"
down_revision: str | None = "8b1e5f3c2a47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_session",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "key_id",
            sa.Integer(),
            sa.ForeignKey("api_key.id", ondelete="CASCADE", name="fk_dashboard_session_key_id_api_key"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("token_hash", name="uq_dashboard_session_token_hash"),
    )
    op.create_index("ix_dashboard_session_key_id", "dashboard_session", ["key_id"])
    op.create_index("ix_dashboard_session_expires_at", "dashboard_session", ["expires_at"])


def downgrade() -> None:
    op.drop_table("dashboard_session")
