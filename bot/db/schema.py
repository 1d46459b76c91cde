"""Migrations through a connection the app already holds (no nested event loop)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from bot.errors import SchemaOutOfDate

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (and the dialects it brings, some 10 MB) is imported only to migrate, or to explain a
# schema that is not the head: a serving bot checks its schema against migrations.HEAD.


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "migrations/versions holds no revision"
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), revision))


def _current(connection: Connection) -> str | None:
    """What Alembic's version table holds (None: no schema yet)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def ensure_current(engine: AsyncEngine) -> None:
    """Refuse to run on a schema that is not the one this code was written for."""
    current = await current_revision(engine)
    if current == migrations.HEAD:
        return
    from alembic.script import ScriptDirectory

    head = head_revision()
    if current is None:
        raise SchemaOutOfDate("the database has no schema yet: run `failover-bot migrate` first")
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise SchemaOutOfDate(
            f"the database schema is at {current}, which this bot does not know "
            "(was it migrated by a newer version?)"
        )
    raise SchemaOutOfDate(
        f"the database schema is at {current} but this bot needs {head}: run `failover-bot migrate`"
    )
