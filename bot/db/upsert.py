"""INSERT ... ON CONFLICT DO NOTHING on both databases the bot runs on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


def insert_or_ignore(session: AsyncSession, model: Any) -> Any:
    """An insert into ``model`` that skips rows whose key is already there.

    A unique key decides, inside the database: of two instances inserting the same key at once,
    one inserts and the other skips (PostgreSQL makes the second wait for the first to commit),
    where reading first and then inserting let both insert, or fail one with IntegrityError."""
    # Each dialect's package is imported only where it is in use: PostgreSQL's holds some 25
    # modules (about 3 MB) that a bot on SQLite would otherwise load for nothing, and back.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model).on_conflict_do_nothing()
    raise RuntimeError(f"no insert-or-ignore for the {dialect} database")
