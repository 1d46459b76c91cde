"""The leader lease: one row, taken when expired, renewed by its holder, judged by the DB's clock.

Only the holder probes, reads Cloudflare and posts. A holder that dies stops renewing, and the
row expires by itself after ``ttl``; any other instance then takes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Lease

NAME = "leader"


async def db_now(session: AsyncSession) -> datetime:
    """The database's clock, so that instances with skewed clocks agree."""
    value = await session.scalar(select(func.now() if _is_pg(session) else func.datetime("now")))
    if isinstance(value, str):  # SQLite answers text in UTC
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _is_pg(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


class LeaderLease:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], holder: str, ttl: float) -> None:
        self.sessions = sessions
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)

    async def acquire(self) -> bool:
        """Take or renew the lease; True while this instance holds it."""
        async with self.sessions.begin() as session:
            now = await db_now(session)
            taken = await session.execute(
                update(Lease)
                .where(Lease.name == NAME, (Lease.holder == self.holder) | (Lease.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.ttl)
            )
            if taken.rowcount:  # type: ignore[attr-defined]
                return True
            if await session.get(Lease, NAME) is not None:
                return False
        try:
            async with self.sessions.begin() as session:
                session.add(
                    Lease(
                        name=NAME, holder=self.holder, expires_at=await db_now(session) + self.ttl
                    )
                )
            return True
        except IntegrityError:
            return False  # another instance inserted it first

    async def release(self) -> None:
        async with self.sessions.begin() as session:
            now = await db_now(session)
            await session.execute(
                update(Lease)
                .where(Lease.name == NAME, Lease.holder == self.holder)
                .values(expires_at=now - timedelta(seconds=1))
            )

    async def holder_now(self) -> str | None:
        async with self.sessions() as session:
            lease = await session.get(Lease, NAME)
            if lease is None or lease.expires_at < await db_now(session):
                return None
            return lease.holder
