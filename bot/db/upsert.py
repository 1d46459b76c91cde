"""INSERT ... ON CONFLICT DO NOTHING on both databases the bot runs on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_or_ignore(session: AsyncSession, model: Any) -> Any:
    """An insert into ``model`` that skips rows whose key is already there.

    A unique key decides, inside the database: of two instances inserting the same key at once,
    one inserts and the other skips (PostgreSQL makes the second wait for the first to commit),
    where reading first and then inserting let both insert, or fail one with IntegrityError."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing()
    raise RuntimeError(f"no insert-or-ignore for the {dialect} database")
