"""Alembic environment: the URL comes from the caller (``broker.store.db.upgrade``), never from a file."""

from alembic import context

from broker.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
