"""Incidents as the commands read and annotate them: views built from the database, so any
instance can answer, with the watch's stored state for the pools' states and routing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.alerts import incident_view
from bot.db.models import Incident
from bot.fleet import Fleet
from bot.incidents import Incidents, recent_incidents
from bot.reads import IncidentView
from bot.watch import stored_state


class IncidentRecords:
    def __init__(
        self,
        fleet: Fleet,
        sessions: async_sessionmaker[AsyncSession],
        incidents: Incidents,
        clock: Callable[[], datetime],
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.incidents = incidents
        self.clock = clock

    async def _view(self, session: AsyncSession, incident: Incident) -> IncidentView:
        monitor = await stored_state(self.sessions)
        return await incident_view(session, incident, self.fleet, monitor, self.clock())

    async def recent(self, limit: int = 10) -> list[IncidentView]:
        async with self.sessions() as session:
            return [await self._view(session, i) for i in await recent_incidents(session, limit)]

    async def get(self, incident_id: int) -> IncidentView | None:
        async with self.sessions() as session:
            incident = await session.get(Incident, incident_id)
            return None if incident is None else await self._view(session, incident)

    async def note(self, incident_id: int, author: str, text: str) -> bool:
        """Add an operator's note to the timeline and the thread; False if there is no such."""
        async with self.sessions.begin() as session:
            incident = await session.get(Incident, incident_id)
            if incident is None:
                return False
            await self.incidents.note(session, incident, author, text, self.clock())
            return True

    async def acknowledge(self, incident_id: int, who: str) -> Acknowledgement:
        """Acknowledge the incident's page from Slack (``who`` a user id). Refused, with nothing
        changed, when there is no such incident, it was never paged, it is over, or someone
        acknowledged it already."""
        async with self.sessions.begin() as session:
            incident = await session.get(Incident, incident_id)
            if incident is None:
                return Acknowledgement("unknown")
            if incident.page_key is None:
                return Acknowledgement("not paged")
            if incident.acknowledged_at is not None:
                return Acknowledgement(
                    "already", incident.acknowledged_by, incident.acknowledged_via,
                    incident.acknowledged_at,
                )  # fmt: skip
            if incident.closed_at is not None:
                return Acknowledgement("closed")
            now = self.clock()
            if await self.incidents.acknowledge(session, incident, who, "slack", now) is None:
                # Lost a race (another click, the webhook, the close) since the checks above.
                if incident.closed_at is not None and incident.acknowledged_at is None:
                    return Acknowledgement("closed")
                return Acknowledgement(
                    "already", incident.acknowledged_by, incident.acknowledged_via,
                    incident.acknowledged_at,
                )  # fmt: skip
            return Acknowledgement("acknowledged", who, "slack", now)


@dataclass(frozen=True)
class Acknowledgement:
    """What became of an Acknowledge click: ``outcome`` acknowledged, already, closed, not paged
    or unknown; who acknowledged it, where and when (now, or the first time)."""

    outcome: str
    by: str | None = None
    via: str | None = None
    at: datetime | None = None
