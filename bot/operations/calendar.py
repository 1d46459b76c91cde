"""Game days on the calendar: weekly drills put on it a day ahead, the notice, and the start."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Operation
from bot.fleet import DAYS, Fleet
from bot.operations.detail import OperationDetail, detail_of, update_detail
from bot.operations.state import OpKind, OpState, move
from bot.operations.store import journal, scheduled_drills

AHEAD = timedelta(days=1)  # how far ahead a weekly game day is put on the calendar


def next_weekly(now: datetime, day: str, hhmm: str) -> datetime:
    """The next ``day`` (mon..sun) at ``hhmm`` UTC at or after ``now``."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    days_ahead = (DAYS.index(day.lower()) - now.weekday()) % 7
    at = (now + timedelta(days=days_ahead)).replace(
        hour=hour, minute=minute, second=0, microsecond=0
    )
    return at if at >= now else at + timedelta(days=7)


async def schedule_weekly(
    fleet: Fleet,
    sessions: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime],
    channel: str,
) -> None:
    """Put the next weekly game day of each entry on the calendar, once, a day ahead."""
    now = clock()
    for day in fleet.gamedays.weekly:
        at = next_weekly(now, day.day, day.time)
        if at - now > AHEAD:
            continue
        async with sessions.begin() as session:
            drills = await session.scalars(
                select(Operation).where(
                    Operation.kind == OpKind.DRILL, Operation.region == day.region
                )
            )
            if any(detail_of(o).at == at for o in drills):
                continue
            op = Operation(
                kind=OpKind.DRILL,
                region=day.region,
                origin=None,
                state=OpState.SCHEDULED,
                requested_by="schedule",
                reason=f"weekly game day ({day.day} {day.time} UTC)",
                break_glass=[],
                created_at=now,
                updated_at=now,
                channel=channel,
                detail=OperationDetail(at=at).model_dump(mode="json", exclude_defaults=True),
            )
            session.add(op)
            await session.flush()
            text = f"weekly game day scheduled for {at:%a %Y-%m-%d %H:%M} UTC"
            journal(session, op, now, "scheduled", text, post=False)


async def due(
    fleet: Fleet, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]
) -> list[int]:
    """Scheduled drills: the notice ahead, then the start (preflight runs as usual).

    Returns the drills looked at, whose journal may owe posts.
    """
    now = clock()
    touched: list[int] = []
    async with sessions.begin() as session:
        for op in await scheduled_drills(session):
            touched.append(op.id)
            detail = detail_of(op)
            at = detail.at or now
            if not detail.noticed and (at - now).total_seconds() <= fleet.gamedays.notice:
                update_detail(op, noticed=True)
                journal(
                    session, op, now, "notice", f"drill of {op.region} starts at {at:%H:%M} UTC"
                )
            if at <= now:
                move(op, OpState.STARTING)
                text = f"the scheduled drill of {op.region} starts now"
                journal(session, op, now, "starting", text)
    return touched
