"""Alerts closed when their rule goes, and the firing set sent to a new endpoint.

alert_transition.reason says why a change was not the value's doing (rule_changed, rule_removed,
scope_removed); alert_state.severity and alert_state.message_id (the webhook-id of the breach's
alert.firing) let a removed rule's alerts be resolved and replayed without the rule;
webhook_firing_request holds the endpoints waiting for the alerts firing now.

Revision ID: 7a1e2c5d9b40
Revises: 3d7e9d710ee9
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7a1e2c5d9b40"
down_revision: str | None = "3d7e9d710ee9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_transition") as batch:
        batch.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
    with op.batch_alter_table("alert_state") as batch:
        batch.add_column(sa.Column("severity", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("message_id", sa.String(length=64), nullable=True))
    # A state's severity is its latest transition's; a state that never changed is ok, and the
    # next evaluation writes its rule's severity anyway.
    op.execute(
        "UPDATE alert_state SET severity = COALESCE("
        "(SELECT t.severity FROM alert_transition t"
        " WHERE t.rule_id = alert_state.rule_id AND t.scope = alert_state.scope"
        " AND t.scope_id = alert_state.scope_id AND t.currency = alert_state.currency"
        " ORDER BY t.id DESC LIMIT 1), 'warning')"
    )
    with op.batch_alter_table("alert_state") as batch:
        batch.alter_column("severity", existing_type=sa.String(length=16), nullable=False)
    op.create_table(
        "webhook_firing_request",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoint.id"],
            name=op.f("fk_webhook_firing_request_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", name=op.f("pk_webhook_firing_request")),
    )


def downgrade() -> None:
    op.drop_table("webhook_firing_request")
    with op.batch_alter_table("alert_state") as batch:
        batch.drop_column("message_id")
        batch.drop_column("severity")
    with op.batch_alter_table("alert_transition") as batch:
        batch.drop_column("reason")
