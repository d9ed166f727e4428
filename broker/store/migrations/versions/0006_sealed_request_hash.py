"""Request digests are sealed like the secrets they are computed from: the columns hold ciphertext, not 64 hex
characters. (A bare SHA-256 of a request that carries an API key or a password lets anyone holding the database
test guesses of it offline.) Rows written before stay readable as they are; ``drbroker keys rotate`` seals them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = ("instances", "bindings", "operations")


def upgrade() -> None:
    for table in _TABLES:
        # Batch mode: SQLite cannot change a column's type in place, so the table is copied.
        with op.batch_alter_table(table) as batch:
            batch.alter_column("request_hash", type_=sa.Text(), existing_type=sa.String(64),
                               existing_nullable=False)


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("request_hash", type_=sa.String(64), existing_type=sa.Text(),
                               existing_nullable=False)
