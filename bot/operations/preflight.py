"""A drill's preflight: why it may not start now (pools, incidents, other operations, windows)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Operation
from bot.fleet import Fleet
from bot.incidents import open_incident
from bot.lbmodel import LiveView
from bot.monitor import MonitorState, PoolState
from bot.operations.state import DRILL_RUNNING, OpKind
from bot.operations.store import in_flight
from bot.safety import Proposal, assess, blocked_by


async def preflight(
    fleet: Fleet,
    sessions: async_sessionmaker[AsyncSession],
    view: LiveView,
    now: datetime,
    monitor_state: Callable[[], MonitorState | None],
    op: Operation,
) -> list[str]:
    """Why the drill ``op`` may not start now (empty: it may)."""
    async with sessions() as session:
        ops = await in_flight(session, fleet, now, besides=op.id)
        incident = await open_incident(session)
        others = (
            await session.scalars(
                select(Operation).where(
                    Operation.kind == OpKind.DRILL,
                    Operation.id != op.id,
                    Operation.state.in_(DRILL_RUNNING),
                )
            )
        ).first()
    reasons = []
    window = blocked_by(fleet.gamedays.blocked, now)
    if window is not None:
        reasons.append(f"a blocked window: {window}")
    if incident is not None:
        reasons.append(f"incident #{incident.id} is open")
    if others is not None:
        reasons.append(f"drill #{others.id} is running")
    a = assess(Proposal(OpKind.DRILL, op.region), fleet, view, ops, now)
    reasons += [r.text for r in a.refusals]
    target = view.pool_by_name(fleet.regions[op.region].pool)
    if target is None or not target.enabled:
        reasons.append(f"the pool of {op.region} is already disabled: nothing to drill")
    elif target.healthy is False:
        reasons.append(f"the target pool of {op.region} is not healthy")
    states = monitor_state()
    for region in sorted({r.after for r in a.blast if r.moves}):
        pool = view.pool_by_name(fleet.regions[region].pool) if region in fleet.regions else None
        track = states.pools.get(region) if states is not None else None
        if pool is None or pool.healthy is False:
            reasons.append(f"the receiving pool {region} is not healthy")
        elif track is not None and track.state not in (PoolState.HEALTHY, PoolState.UNKNOWN):
            reasons.append(f"the bot's probes say the receiving pool {region} is {track.state}")
    return reasons
