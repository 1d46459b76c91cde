"""The App Home dashboard: regions, routing, open incidents, drains and drills, the next game day.

Published when a user opens the tab, and re-published by the lease holder to those who have
opened it when what it shows changes, at most every 10 s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import HomeViewer, Incident, Operation
from bot.db.upsert import insert_or_ignore
from bot.fleet import Fleet
from bot.monitor import MonitorState
from bot.operations.detail import detail_of
from bot.operations.state import OPEN, OpState
from bot.ports import HomePublisher
from bot.reads import BoardOperation, Dashboard
from bot.watch import stored_state


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

    async def dashboard(self, live: MonitorState | None = None) -> Dashboard:
        """``live``: the watch's own state (the lease holder's); else the one it last stored."""
        state = live or await stored_state(self.sessions) or MonitorState()
        async with self.sessions() as session:
            incidents = list(
                await session.scalars(select(Incident).where(Incident.closed_at.is_(None)))
            )
            ops = list(await session.scalars(select(Operation).where(Operation.state.in_(OPEN))))
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
            at for o in ops if o.state == OpState.SCHEDULED and (at := detail_of(o).at)
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
                BoardOperation(
                    f"{o.kind} #{o.id} of {o.origin or o.region}: {o.state.replace('_', ' ')}",
                    o.requested_by,
                )
                for o in ops
                if o.state != OpState.SCHEDULED
            ],
            next_game_day=f"{scheduled[0]:%Y-%m-%d %H:%M} UTC" if scheduled else None,
        )

    async def opened(self, user: str, publisher: HomePublisher) -> None:
        """A user opened the tab: show the dashboard now, and keep them on the refresh list.

        One row per viewer, inserted or ignored: many opening at once each add their own row
        (a shared JSON list rewritten by each lost some of them, and its first insert raced)."""
        if user:
            async with self.sessions.begin() as session:
                await session.execute(
                    insert_or_ignore(session, HomeViewer).values(
                        user_id=user, first_opened_at=self.clock()
                    )
                )
        await publisher.publish_home(user, await self.dashboard(), self.clock())

    async def viewers(self) -> list[str]:
        async with self.sessions() as session:
            return list(
                await session.scalars(select(HomeViewer.user_id).order_by(HomeViewer.user_id))
            )

    async def refresh(self, publisher: HomePublisher, live: MonitorState | None = None) -> int:
        """Re-publish to the viewers when the dashboard changed; returns how many were sent.
        The lease holder passes its watch's state (not read back from the database)."""
        board = await self.dashboard(live)
        digest = board.digest()
        if digest == self._published:
            return 0
        users = await self.viewers()
        for user in users:
            await publisher.publish_home(user, board, self.clock())
        self._published = digest
        return len(users)
