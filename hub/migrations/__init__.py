"""Alembic migrations of the hub's schema (hub/schema.py); run by `hub.db.upgrade`."""
