"""Alembic environment: runs on the connection `hub.db.upgrade` hands over (online mode only)."""

from __future__ import annotations

from alembic import context

from hub.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("hub migrations run through hub.db.upgrade (affectbox-hub migrates at start)")
# batch mode lets later revisions alter SQLite tables (it has almost no ALTER TABLE)
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
