"""Silences: mute a region's thread replies for a while (recoveries still post)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Silence

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
