"""Alembic migrations of the durable store, run by :meth:`dispatch.db.Database.migrate`."""
