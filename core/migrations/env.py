"""Alembic's environment for the durable store.

:meth:`core.db.Database.migrate` runs Alembic in code and hands over its
connection (``config.attributes["connection"]``), already in a transaction
that holds the migration lock; everything here then runs inside it.

Without a connection (a developer's ``alembic.command.revision(...,
autogenerate=True)`` on :func:`core.db.alembic_config`), the URL comes from
``sqlalchemy.url`` or ``DISPATCH_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from core.tables import metadata

# The migrations themselves are plain DDL. The domains' tables are only needed
# to compare (autogenerate): a developer imports them first, e.g.
#   import signaling.tables, wallet.tables  # registers their tables
# (the base imports nothing of the project, so it cannot do it here).

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: later revisions copy-and-move.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DISPATCH_DATABASE_URL")
    return url or "sqlite+aiosqlite:///./dispatch.db"


async def _run_own_connection() -> None:
    from core.db import Database  # late: core.db runs this module

    db = Database.from_url(_url())
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(_configure)
            await conn.commit()
    finally:
        await db.aclose()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    else:
        asyncio.run(_run_own_connection())


_main()
