"""Reading incidents for commands: views built from the database (any instance can answer)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts import incident_view
from bot.db.models import Incident, StoredState
from bot.errors import UsageError
from bot.monitor import MonitorState
from bot.reads import IncidentView
from bot.watch import MONITOR_KEY
from commands.base import Context


async def stored_monitor(session: AsyncSession) -> MonitorState | None:
    row = await session.get(StoredState, MONITOR_KEY)
    return MonitorState.model_validate(row.value) if row else None


async def view_of(ctx: Context, session: AsyncSession, incident: Incident) -> IncidentView:
    services = ctx.services
    return await incident_view(
        session, incident, services.fleet, await stored_monitor(session), services.clock()
    )


def incident_id(word: str, usage: str) -> int:
    number = word.lstrip("#")
    if not number.isdigit():
        raise UsageError(
            f"`{word}` is not an incident id (a number, as `/failover incidents` lists them).",
            usage,
        )
    return int(number)


async def find(ctx: Context, session: AsyncSession, word: str, usage: str) -> Incident:
    incident = await session.get(Incident, incident_id(word, usage))
    if incident is None:
        raise UsageError(f"There is no incident {word}. `/failover incidents` lists them.", usage)
    return incident
