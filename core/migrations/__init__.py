"""Alembic migrations of the durable store, run by :meth:`core.db.Database.migrate`."""
