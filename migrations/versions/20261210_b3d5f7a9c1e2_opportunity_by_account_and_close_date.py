"""opportunity indexed by account and by close date.

After a few deals changed, an incremental refresh of the customer KPIs reads the won deals of
the accounts they touched and the latest won deals (retention has values up to the last period
with one). Without these indexes each is a scan of every deal: at a million deals some 0.4 s
apiece, on every push.

Revision ID: b3d5f7a9c1e2
Revises: a8c0e2f4b6d1
Create Date: 2026-12-10 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b3d5f7a9c1e2"
down_revision: str | None = "a8c0e2f4b6d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_opportunity_connection_id_account_external_id"),
        "opportunity",
        ["connection_id", "account_external_id"],
    )
    op.create_index(op.f("ix_opportunity_close_date"), "opportunity", ["close_date"])


def downgrade() -> None:
    op.drop_index(op.f("ix_opportunity_close_date"), table_name="opportunity")
    op.drop_index(op.f("ix_opportunity_connection_id_account_external_id"), table_name="opportunity")
