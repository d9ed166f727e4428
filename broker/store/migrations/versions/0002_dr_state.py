"""Instances remember their DR state (active site, rehearsal, last RTO) and their customer account.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("dr_state", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("account_id", sa.String(64)))
    op.create_index("ix_instances_account", "instances", ["account_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_instances_account", "instances")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("account_id")
        batch.drop_column("dr_state")
