"""The audit trail: one hash-chained record per mutating request and day-2 action.

Secrets at rest need no schema change: sealed values are text in the existing columns.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = 255


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("principal", sa.String(ID)),
        sa.Column("originating_identity", sa.Text),
        sa.Column("request_identity", sa.String(ID)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(ID)),
        sa.Column("binding_id", sa.String(ID)),
        sa.Column("operation_id", sa.String(64)),
        sa.Column("status", sa.Integer),
        sa.Column("outcome", sa.String(64)),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ux_audit_events_prev_hash", "audit_events", ["prev_hash"], unique=True)
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_at", "audit_events")
    op.drop_index("ux_audit_events_prev_hash", "audit_events")
    op.drop_table("audit_events")
