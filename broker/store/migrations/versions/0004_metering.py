"""Usage metering: one row per instance and metered hour, so each hour is reported once.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = 255


def upgrade() -> None:
    op.create_table(
        "metering_records",
        sa.Column("instance_id", sa.String(ID), primary_key=True),
        sa.Column("hour_start", sa.Integer, primary_key=True),
        sa.Column("plan_id", sa.String(ID), nullable=False),
        sa.Column("resource_instance_id", sa.String(ID), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.Float),
        sa.Column("transaction_id", sa.String(ID)),
        sa.Column("error", sa.Text),
        sa.Column("sent_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_metering_records_state", "metering_records", ["state"])


def downgrade() -> None:
    op.drop_index("ix_metering_records_state", "metering_records")
    op.drop_table("metering_records")
