"""The keyed audit chain: each record says how its link is computed, and the MAC key lives sealed in its table.

Existing records are marked ``sha256`` (the unkeyed rule they were written with). The column gets no default
afterwards: a broker that predates this revision cannot append a record without it, so no unkeyed record can
follow a keyed one.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop a column default in place, so the table is copied.
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("chain", sa.String(16), nullable=False, server_default="sha256"))
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("chain", server_default=None, existing_type=sa.String(16), existing_nullable=False)
    op.create_table(
        "audit_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_keys")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("chain")
