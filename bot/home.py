"""The App Home dashboard: regions, routing, open incidents, drains and drills, the next game day.

Published when a user opens the tab, and re-published by the lease holder to those who have
opened it when what it shows changes, at most every 10 s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Incident, Operation, StoredState
from bot.fleet import Fleet
from bot.monitor import MonitorState
from bot.watch import stored_state

VIEWERS = "home_viewers"
OPEN_STATES = (
    "awaiting_confirmation", "awaiting_approval", "applying", "active", "restoring", "rejoining",
    "scheduled", "saving", "disabling", "measuring_rto", "holding", "measuring_rejoin",
)  # fmt: skip


@dataclass(frozen=True)
class Dashboard:
    regions: dict[str, str]  # region -> state
    cloudflare: dict[str, str]  # region -> Cloudflare's health
    moved: dict[str, str]  # geo -> region serving it instead of its own
    stranded: dict[str, str] = field(default_factory=dict)  # geo -> what its users get instead
    incidents: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    next_game_day: str | None = None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class HomePublisher(Protocol):
    async def publish_home(self, user: str, dashboard: Dashboard, at: datetime) -> None: ...


class Home:
    def __init__(
        self,
        fleet: Fleet,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.clock = clock
        self._published: str | None = None

    async def dashboard(self) -> Dashboard:
        state = await stored_state(self.sessions) or MonitorState()
        async with self.sessions() as session:
            incidents = list(
                await session.scalars(select(Incident).where(Incident.closed_at.is_(None)))
            )
            ops = list(
                await session.scalars(select(Operation).where(Operation.state.in_(OPEN_STATES)))
            )
        regions = {
            r: (state.pools[r].state.value if r in state.pools else "unknown")
            for r in self.fleet.regions
        }
        cloudflare = {}
        for r in self.fleet.regions:
            track = state.pools.get(r)
            healthy = track.cf_healthy if track else None
            cloudflare[r] = (
                "unknown" if healthy is None else ("healthy" if healthy else "unhealthy")
            )
            if track is not None and not track.cf_enabled:
                cloudflare[r] = "disabled"
        scheduled = sorted(
            str((o.detail or {}).get("at", "")) for o in ops if o.state == "scheduled"
        )
        return Dashboard(
            regions=regions,
            cloudflare=cloudflare,
            moved={g: r for g, r in state.failed_over.items() if g not in state.stranded},
            stranded=dict(state.stranded),
            incidents=[
                f"#{i.id} {i.title} ({i.severity}), began {i.began_at:%H:%M} UTC" for i in incidents
            ],
            operations=[
                f"{o.kind} of {o.origin or o.region}: {o.state.replace('_', ' ')} "
                f"(by <@{o.requested_by}>)"
                for o in ops
                if o.state != "scheduled"
            ],
            next_game_day=scheduled[0][:16].replace("T", " ") + " UTC" if scheduled else None,
        )

    async def opened(self, user: str, publisher: HomePublisher) -> None:
        """A user opened the tab: show the dashboard now, and keep them on the refresh list."""
        async with self.sessions.begin() as session:
            row = await session.get(StoredState, VIEWERS)
            users = set((row.value or {}).get("users", [])) if row else set()
            users.add(user)
            value = {"users": sorted(users)}
            if row is None:
                session.add(StoredState(name=VIEWERS, value=value, updated_at=self.clock()))
            else:
                row.value, row.updated_at = value, self.clock()
        await publisher.publish_home(user, await self.dashboard(), self.clock())

    async def refresh(self, publisher: HomePublisher) -> int:
        """Re-publish to the viewers when the dashboard changed; returns how many were sent."""
        board = await self.dashboard()
        digest = board.digest()
        if digest == self._published:
            return 0
        async with self.sessions() as session:
            row = await session.get(StoredState, VIEWERS)
        users = (row.value or {}).get("users", []) if row else []
        for user in users:
            await publisher.publish_home(user, board, self.clock())
        self._published = digest
        return len(users)
