"""Game days: blocked windows, the weekly calendar, notices and starts of scheduled drills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.db.engine import create_engine, sessionmaker
from bot.db.models import JournalEntry, Operation
from bot.fleet import BlockedWindow, Fleet, GameDay
from bot.operations.calendar import due, next_weekly, schedule_weekly
from bot.operations.detail import detail_of
from bot.safety import blocked_by

THURSDAY = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)


def test_blocked_windows() -> None:
    windows = [
        BlockedWindow(days=["fri", "sat", "sun"], reason="weekend"),
        BlockedWindow(start="22:00", end="06:00", reason="night"),
        BlockedWindow(date="2026-12-24", reason="code freeze"),
        BlockedWindow(days=["mon"], start="09:00", end="10:00", reason="standup"),
    ]
    assert blocked_by(windows, THURSDAY) is None
    assert blocked_by(windows, THURSDAY + timedelta(days=1)) == "weekend"
    assert blocked_by(windows, THURSDAY.replace(hour=23)) == "night"
    assert blocked_by(windows, THURSDAY.replace(hour=5, minute=59)) == "night"
    assert blocked_by(windows, datetime(2026, 12, 24, 12, 0, tzinfo=UTC)) == "code freeze"
    monday = THURSDAY + timedelta(days=4)
    assert blocked_by(windows, monday.replace(hour=9, minute=30)) == "standup"
    assert blocked_by(windows, monday.replace(hour=10, minute=0)) is None


def test_next_weekly() -> None:
    assert next_weekly(THURSDAY, "thu", "14:00") == THURSDAY.replace(hour=14)
    assert next_weekly(THURSDAY, "thu", "12:00") == THURSDAY.replace(hour=12) + timedelta(days=7)
    assert next_weekly(THURSDAY, "tue", "09:30") == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


async def test_schedule_notice_and_start(fleet: Fleet, migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    sessions = sessionmaker(engine)
    now = [THURSDAY]
    weekly = fleet.gamedays.model_copy(
        update={"weekly": [GameDay(region="eu-west", day="thu", time="14:00")], "blocked": []}
    )
    planned = fleet.model_copy(update={"gamedays": weekly})
    try:
        await schedule_weekly(planned, sessions, lambda: now[0], "C1")
        await schedule_weekly(planned, sessions, lambda: now[0], "C1")  # once per occurrence
        async with sessions() as session:
            [op] = (await session.scalars(select(Operation))).all()
        assert (op.state, op.region, op.requested_by) == ("scheduled", "eu-west", "schedule")
        assert detail_of(op).at == THURSDAY.replace(hour=14)
        now[0] = THURSDAY.replace(minute=30)  # 30 min before: the notice
        await due(planned, sessions, lambda: now[0])
        now[0] = THURSDAY.replace(hour=14)
        await due(planned, sessions, lambda: now[0])
        async with sessions() as session:
            started = await session.get(Operation, op.id)
            texts = [
                j.text
                for j in await session.scalars(select(JournalEntry).order_by(JournalEntry.id))
            ]
        assert (
            started is not None and started.state == "starting"
        )  # the driver now runs it, preflight first
        assert "drill of eu-west starts at 14:00 UTC" in texts
        assert "the scheduled drill of eu-west starts now" in texts
    finally:
        await engine.dispose()
