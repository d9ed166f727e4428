"""RPO samples: each ready instance's achieved RPO over time, for the dashboard.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rpo_samples",
        sa.Column("instance_id", sa.String(255), primary_key=True),
        sa.Column("at", sa.Float, primary_key=True),
        sa.Column("achieved_rpo_seconds", sa.Float),
        sa.Column("replication_state", sa.String(64), nullable=False),
    )
    op.create_index("ix_rpo_samples_at", "rpo_samples", ["at"])


def downgrade() -> None:
    op.drop_table("rpo_samples")
