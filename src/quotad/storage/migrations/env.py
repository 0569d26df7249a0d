"""Alembic environment: runs on the connection quotad hands over (see ``storage.migrate``)."""

from alembic import context

from quotad.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
