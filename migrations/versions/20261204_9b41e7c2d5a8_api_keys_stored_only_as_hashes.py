"""API keys are stored only as hashes: the readable copy of the embedded demo's key goes.

``api_key.display_key`` kept one key readable so that ``serve`` could print it at every start
(and so into every container log). Dropping the column loses nothing a key needs: every key,
that one included, has always been checked by its ``key_hash``, so it keeps working. A
downgrade brings the column back empty (a key that is gone cannot be made readable again).

Revision ID: 9b41e7c2d5a8
Revises: 7a1e2c5d9b40
Create Date: 2026-12-04 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b41e7c2d5a8"
down_revision: str | None = "7a1e2c5d9b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("display_key")


def downgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(sa.Column("display_key", sa.String(length=80), nullable=True))
