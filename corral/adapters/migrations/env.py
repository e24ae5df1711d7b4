"""Alembic's entry point. Corral runs migrations from code (`upgrade()` in this package), which hands
over an open connection; there is no alembic.ini."""

from __future__ import annotations

from alembic import context

from corral.adapters.migrations import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through corral.adapters.migrations.upgrade(engine)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
