"""Silences: mute a region's thread replies for a while (recoveries still post)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Silence
from bot.reads import SilenceView

DEFAULT = timedelta(hours=1)
MAXIMUM = timedelta(hours=24)


async def active(session: AsyncSession, now: datetime) -> list[Silence]:
    rows = await session.scalars(
        select(Silence)
        .where(Silence.ended_at.is_(None), Silence.until > now)
        .order_by(Silence.until)
    )
    return list(rows)


async def silence(
    session: AsyncSession, region: str, length: timedelta, reason: str, who: str, now: datetime
) -> Silence:
    """Silence ``region`` for ``length``; an existing silence of it is replaced."""
    for old in await active(session, now):
        if old.region == region:
            old.ended_at = now
    row = Silence(region=region, until=now + length, reason=reason, created_by=who, created_at=now)
    session.add(row)
    return row


async def unsilence(session: AsyncSession, region: str, now: datetime) -> bool:
    ended = False
    for old in await active(session, now):
        if old.region == region:
            old.ended_at, ended = now, True
    return ended


class Silences:
    """Silences as the commands use them: each call its own transaction."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]
    ) -> None:
        self.sessions = sessions
        self.clock = clock

    async def silence(self, region: str, length: timedelta, reason: str, who: str) -> SilenceView:
        async with self.sessions.begin() as session:
            row = await silence(session, region, length, reason, who, self.clock())
            return _view(row)

    async def active(self) -> list[SilenceView]:
        async with self.sessions() as session:
            return [_view(s) for s in await active(session, self.clock())]

    async def unsilence(self, region: str) -> bool:
        async with self.sessions.begin() as session:
            return await unsilence(session, region, self.clock())


def _view(row: Silence) -> SilenceView:
    return SilenceView(row.region, row.until, row.reason, row.created_by)
