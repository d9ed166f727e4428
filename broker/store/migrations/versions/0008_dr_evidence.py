"""DR evidence: the DR event log, rehearsal schedules, the notification outbox, export cursors and the
instances whose configuration snapshot is due.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = 255


def upgrade() -> None:
    op.create_table(
        "dr_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.String(ID)),
        sa.Column("binding_id", sa.String(ID)),
        sa.Column("operation_id", sa.String(64)),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ux_dr_events_id", "dr_events", ["id"], unique=True)
    op.create_index("ix_dr_events_instance", "dr_events", ["instance_id", "seq"])
    op.create_index("ix_dr_events_at", "dr_events", ["at"])

    op.create_table(
        "rehearsal_schedules",
        sa.Column("instance_id", sa.String(ID), primary_key=True),
        sa.Column("schedule", sa.String(128), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("window_start", sa.String(5)),
        sa.Column("window_minutes", sa.Integer),
        sa.Column("max_age_seconds", sa.Float),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("next_due_at", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_fired_at", sa.Float),
        sa.Column("last_outcome", sa.String(128)),
        sa.Column("last_operation_id", sa.String(64)),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_rehearsal_schedules_due", "rehearsal_schedules", ["enabled", "next_due_at"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_seq", sa.Integer, nullable=False),
        sa.Column("instance_id", sa.String(ID)),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
    )
    op.create_index("ux_outbox_delivery", "outbox", ["event_seq", "channel", "target"], unique=True)
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])

    op.create_table(
        "export_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("pending_start", sa.Integer),
        sa.Column("pending_end", sa.Integer),
        sa.Column("pending_key", sa.Text),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_export_at", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )

    op.create_table(
        "instance_snapshots",
        sa.Column("instance_id", sa.String(ID), primary_key=True),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("exported_at", sa.Float),
        sa.Column("exported_key", sa.Text),
        sa.Column("exported_changed_at", sa.Float),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", sa.Float),
    )


def downgrade() -> None:
    for table in ("instance_snapshots", "export_cursors", "outbox", "rehearsal_schedules", "dr_events"):
        op.drop_table(table)
