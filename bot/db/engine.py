"""Database URLs and engines: SQLite by default, PostgreSQL through DATABASE_URL.

Also what the rest of the bot needs to say the database is unavailable: which errors mean that
(``database_error``), a ``ping`` for /healthz, and URLs shown with their password hidden.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import sys
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot.errors import ConfigError

_DRIVERS = {
    "postgres": "postgresql+asyncpg",  # as hosting platforms give it
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


# libpq's sslmode values, which asyncpg takes as its ``ssl`` argument.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def shown(url: str) -> str:
    """``url`` fit for a log line or an error: its password replaced by ***."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _PASSWORD.sub(r"\1***@", url)  # not parsable: hide what looks like one
    # Without a password, as given (rendering would escape a SQLite URI's "file:").
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def async_url(url: str) -> str:
    """``url`` with the async driver the bot uses; ConfigError when it is not a database URL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"DATABASE_URL {shown(url)!r} is not a database URL: expected "
            "sqlite+aiosqlite:///file.db or postgresql://user@host/db"
        ) from None
    driver = _DRIVERS.get(parsed.drivername, parsed.drivername)
    if driver not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise ConfigError(
            f"DATABASE_URL uses {parsed.drivername!r}: expected a sqlite or postgresql URL"
        )
    parsed = parsed.set(drivername=driver)
    if driver == "postgresql+asyncpg" and "sslmode" in parsed.query:
        # Managed PostgreSQL services give libpq's ?sslmode=; SQLAlchemy hands the query to
        # asyncpg.connect() as keywords, where sslmode is a TypeError and the same modes are
        # called ssl (https://github.com/MagicStack/asyncpg/issues/737).
        mode = parsed.query["sslmode"]
        if not isinstance(mode, str) or mode not in SSL_MODES:
            raise ConfigError(
                f"DATABASE_URL has sslmode={mode!r}: expected one of {', '.join(SSL_MODES)}"
            )
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": mode})
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str) -> AsyncEngine:
    return create_async_engine(async_url(url), pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# SQLite calls nearly everything OperationalError, a typo in SQL included: these say the file
# itself cannot be used (https://www.sqlite.org/rescode.html).
_SQLITE_UNAVAILABLE = (
    "unable to open database file",
    "readonly database",
    "disk i/o error",
    "database is locked",
    "disk is full",
    "file is not a database",
    "no such table",
)
# Where a raw socket error comes from: asyncpg's connect is not wrapped by SQLAlchemy.
_DRIVER_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")


def _from_driver(tb: TracebackType | None) -> bool:
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 200 else line[:199] + "…"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"its host name does not resolve ({exc.strerror})"
    if isinstance(exc, TimeoutError | PoolTimeout):
        return "it did not answer in time"
    return _first_line(str(exc)) or type(exc).__name__


def database_error(exc: BaseException) -> str | None:
    """Why the database failed, in a few words, when ``exc`` says it is unavailable (it cannot
    be reached, is gone, refuses writes, times out); None for anything else, a bug included."""
    seen: set[int] = set()
    current: BaseException | None = exc
    # asyncpg's errors, when asyncpg is loaded (a bot on SQLite never imports it: 3 MB).
    asyncpg = sys.modules.get("asyncpg")
    pg_errors: tuple[type[BaseException], ...] = (
        (asyncpg.PostgresError, asyncpg.InterfaceError) if asyncpg is not None else ()
    )
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, IntegrityError | DataError | ProgrammingError | NotSupportedError):
            return None  # the database answered: the bot's own mistake, its traceback wanted
        if isinstance(current, (DBAPIError, PoolTimeout, sqlite3.Error, *pg_errors[:1])):
            orig = current.orig if isinstance(current, DBAPIError) else current
            if isinstance(orig, sqlite3.Error) and not any(
                phrase in str(orig).lower() for phrase in _SQLITE_UNAVAILABLE
            ):
                return None
            return _reason(current)
        if isinstance(current, (OSError, *pg_errors[1:])) and _from_driver(current.__traceback__):
            return _reason(current)
        current = current.__cause__ or current.__context__
    return None


async def ping(engine: AsyncEngine, within: float = 1.0) -> str | None:
    """None when the database runs ``SELECT 1`` within ``within`` s, else why it did not."""
    try:
        async with asyncio.timeout(within):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return f"no answer to SELECT 1 within {within:g} s"
    except Exception as exc:
        return database_error(exc) or _first_line(str(exc)) or type(exc).__name__
    return None


async def ensure_writable(engine: AsyncEngine) -> None:
    """Fail at start on a database that takes no writes (a read-only SQLite file, a read-only
    replica) rather than on every command later: a write to the schema's version row, rolled
    back. Run after the schema is known to be current."""
    async with engine.connect() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
        await conn.rollback()
