"""Silences: mute a region's thread replies for a while (recoveries still post).

A silence never hides an incident: its message is posted and kept current whatever is silenced.
Each silence, and its end (``unsilence`` or expiry), is announced in the channel through the
outbox, written in the same transaction as the change, so it is said once; the lease holder's
scheduler ends expired silences (``expire``), claiming each row, so a handover says it once too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import OutboxPost, Silence
from bot.incidents import open_incident, owe
from bot.reads import SilenceNotice, SilenceView

DEFAULT = timedelta(hours=1)
MAXIMUM = timedelta(hours=24)


async def active(session: AsyncSession, now: datetime) -> list[Silence]:
    rows = await session.scalars(
        select(Silence)
        .where(Silence.ended_at.is_(None), Silence.until > now)
        .order_by(Silence.until)
    )
    return list(rows)


async def _announce(
    session: AsyncSession, row: Silence, kind: str, now: datetime, channel: str
) -> None:
    """Owe the channel the news of ``row`` (kind silence, unsilence or expiry), and keep the open
    incident's message current when it shows the region."""
    if not channel:
        return  # no channel: no watch and no sender, so nothing would ever post it
    session.add(
        OutboxPost(
            created_at=now, channel=channel, incident_id=None, kind=kind, region=row.region,
            silence_id=row.id, attempts=0,
        )
    )  # fmt: skip
    incident = await open_incident(session)
    if incident is not None and row.region in incident.regions:
        owe(session, incident, "update", now)


async def silence(
    session: AsyncSession,
    region: str,
    length: timedelta,
    reason: str,
    who: str,
    now: datetime,
    channel: str = "",
) -> Silence:
    """Silence ``region`` for ``length``; an existing silence of it is replaced (ended quietly:
    the new one's announcement says until when it now runs)."""
    for old in await active(session, now):
        if old.region == region:
            old.ended_at, old.ended_by = now, who
    row = Silence(region=region, until=now + length, reason=reason, created_by=who, created_at=now)
    session.add(row)
    await session.flush()  # its id, for the announcement
    await _announce(session, row, "silence", now, channel)
    return row


async def unsilence(
    session: AsyncSession, region: str, now: datetime, who: str = "", channel: str = ""
) -> bool:
    ended = False
    for old in await active(session, now):
        if old.region == region:
            old.ended_at, old.ended_by, ended = now, who or None, True
            await _announce(session, old, "unsilence", now, channel)
    return ended


async def expire(session: AsyncSession, now: datetime, channel: str = "") -> int:
    """End the silences whose time is up and announce each once; returns how many.

    Each row is claimed with a conditional UPDATE, so two instances that both think they lead
    (a lease handover) cannot both announce it."""
    due = await session.scalars(
        select(Silence).where(Silence.ended_at.is_(None), Silence.until <= now).order_by(Silence.id)
    )
    ended = 0
    for row in list(due):
        claimed = cast(
            "CursorResult[Any]",
            await session.execute(
                update(Silence)
                .where(Silence.id == row.id, Silence.ended_at.is_(None))
                .values(ended_at=row.until)
                .execution_options(synchronize_session=False)
            ),
        )
        if claimed.rowcount != 1:
            continue  # another instance ended it first
        await _announce(session, row, "expiry", now, channel)
        ended += 1
    return ended


def notice(row: Silence, kind: str, now: datetime) -> SilenceNotice:
    """The announcement of ``row`` beginning (silence) or ending (unsilence, expiry), told now."""
    at = row.created_at if kind == "silence" else (row.ended_at or row.until)
    return SilenceNotice(
        kind=kind, region=row.region, until=row.until, reason=row.reason,
        created_by=row.created_by, at=at, now=now,
        ended_by=row.ended_by if kind == "unsilence" else None,
    )  # fmt: skip


class Silences:
    """Silences as the commands use them: each call its own transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        channel: str = "",
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.channel = channel  # where silences are announced; empty: nowhere

    async def silence(self, region: str, length: timedelta, reason: str, who: str) -> SilenceView:
        async with self.sessions.begin() as session:
            row = await silence(session, region, length, reason, who, self.clock(), self.channel)
            return _view(row)

    async def active(self) -> list[SilenceView]:
        async with self.sessions() as session:
            return [_view(s) for s in await active(session, self.clock())]

    async def unsilence(self, region: str, who: str = "") -> bool:
        async with self.sessions.begin() as session:
            return await unsilence(session, region, self.clock(), who, self.channel)

    async def expire(self) -> int:
        """End and announce the silences whose time is up (the lease holder runs it)."""
        async with self.sessions.begin() as session:
            return await expire(session, self.clock(), self.channel)


def _view(row: Silence) -> SilenceView:
    return SilenceView(row.region, row.until, row.reason, row.created_by)
