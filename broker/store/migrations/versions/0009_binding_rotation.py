"""Binding rotation (OSB 2.17): a binding's predecessor, the first binding of its rotation chain (whose service
ID and access policies it shares) and its lifetime (``metadata.expires_at`` / ``renew_before``).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = 255


def upgrade() -> None:
    # Batch mode so SQLite and PostgreSQL take the same path; every column is nullable (bindings made before
    # have no predecessor and no lifetime).
    with op.batch_alter_table("bindings") as batch:
        batch.add_column(sa.Column("predecessor_binding_id", sa.String(ID)))
        batch.add_column(sa.Column("identity_binding_id", sa.String(ID)))
        batch.add_column(sa.Column("expires_at", sa.Float))
        batch.add_column(sa.Column("renew_before", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("bindings") as batch:
        for name in ("renew_before", "expires_at", "identity_binding_id", "predecessor_binding_id"):
            batch.drop_column(name)
