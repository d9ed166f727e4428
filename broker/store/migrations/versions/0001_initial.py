"""Initial schema: instances, bindings, operations, their steps, and the simulated cloud's resources.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 255


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("service_id", sa.String(ID), nullable=False),
        sa.Column("plan_id", sa.String(ID), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("organization_guid", sa.String(ID)),
        sa.Column("space_guid", sa.String(ID)),
        sa.Column("maintenance_version", sa.String(64)),
        sa.Column("dashboard_url", sa.Text),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("last_active", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "bindings",
        sa.Column("instance_id", sa.String(ID), primary_key=True),
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("service_id", sa.String(ID), nullable=False),
        sa.Column("plan_id", sa.String(ID), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("bind_resource", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("credentials", sa.Text),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(ID), nullable=False),
        sa.Column("binding_id", sa.String(ID)),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("plan_id", sa.String(ID), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("step_total", sa.Integer, nullable=False),
        sa.Column("step_started_at", sa.Float),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("originating_identity", sa.Text),
        sa.Column("request_identity", sa.String(ID)),
        sa.Column("principal", sa.String(ID)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("blocked_by", sa.String(64)),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", sa.Float),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_operations_instance", "operations", ["instance_id", "created_at"])
    op.create_index("ix_operations_state", "operations", ["state", "lease_until"])
    op.create_table(
        "operation_steps",
        sa.Column("operation_id", sa.String(64), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("outputs", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "sim_resources",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("instance_id", sa.String(ID), nullable=False),
        sa.Column("binding_id", sa.String(ID)),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ux_sim_resources_kind_name", "sim_resources", ["kind", "name"], unique=True)
    op.create_index("ix_sim_resources_instance", "sim_resources", ["instance_id"])


def downgrade() -> None:
    for table in ("sim_resources", "operation_steps", "operations", "bindings", "instances"):
        op.drop_table(table)
