"""The watch: probe results and Cloudflare reads through the monitor into incidents and posts.

Run only by the lease holder. The monitor's state is written in the same transaction as the
incident changes and the posts they owe, so a new leader carries on where this one stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.db.models import JournalEntry, Operation, StoredState, TimelineEvent
from bot.errors import ProviderAuthError, ProviderError
from bot.fleet import Fleet
from bot.incidents import Incidents, open_incident
from bot.monitor import Event, EventKind, Monitor, MonitorState, PoolState
from bot.observations import ProbeResult
from bot.operations.detail import detail_of
from bot.operations.state import MOVING, OpState
from bot.ports import LoadBalancer
from bot.routing import routing_table

log = logging.getLogger(__name__)
MONITOR_KEY = "monitor"
EVENTS_CURSOR = "cloudflare_events"
# Streaks that changed without an event (a confirmation under way) are written this often.
STATE_EVERY = 5.0


class Watch:
    def __init__(
        self,
        fleet: Fleet,
        sessions: async_sessionmaker[AsyncSession],
        incidents: Incidents,
        loadbalancer: LoadBalancer | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.incidents = incidents
        self.loadbalancer = loadbalancer
        self.clock = clock
        self.monitor = Monitor(fleet)
        self.events_readable = True
        # Probe results arrive concurrently; their writes must land one after another, in order.
        self._writing = asyncio.Lock()
        self._published: dict[str, PoolState] = {}
        self._dirty = False  # the monitor's state changed since it was last written
        self._state_written: datetime | None = None
        # Told when posts are owed (the lease holder's sender); nothing until one is set.
        self.wake: Callable[[], None] = lambda: None

    async def load(self) -> None:
        """Take over the stored state (a new leader starts where the last one stopped)."""
        state = await stored_state(self.sessions)
        self.monitor = Monitor(self.fleet, state or MonitorState())

    async def _commit(self, session: AsyncSession, events: list[Event], now: datetime) -> bool:
        """Write the monitor's state and what the events change; True when posts are owed."""
        self._publish_states()
        events = await self._divert_operation_traffic(session, events, now)
        await self.incidents.apply(session, events, now)
        await _store(session, MONITOR_KEY, self.monitor.state.model_dump(mode="json"), now)
        self._dirty, self._state_written = False, now
        return bool(events)

    def _publish_states(self) -> None:
        """The pool-state gauges, for the pools whose state changed only (one lookup each)."""
        for region, state in self.monitor.states().items():
            if self._published.get(region) is state:
                continue
            metrics.set_pool_state(region, state.value, (each.value for each in PoolState))
            self._published[region] = state

    async def _divert_operation_traffic(
        self, session: AsyncSession, events: list[Event], now: datetime
    ) -> list[Event]:
        """Traffic moved by a drain or drill goes to its thread; it never opens an incident.

        A move is the operation's from its first change until it has rejoined and settled,
        whenever the watch happens to read Cloudflare: traffic going back home, and traffic
        going where its blast radius said it would. Any other move is real.
        """
        moving = (
            EventKind.FAILOVER_TRIGGERED,
            EventKind.NO_HEALTHY_POOL,
            EventKind.TRAFFIC_RESTORED,
        )
        if not any(e.kind in moving for e in events):
            return events
        settled = now - timedelta(seconds=self.fleet.operations.settle)
        ops = list(
            await session.scalars(
                select(Operation).where(
                    Operation.state.in_(MOVING) | (Operation.finished_at > settled)
                )
            )
        )
        kept = []
        for e in events:
            op = next(
                (op for op in ops if e.kind in moving and _caused(op, e, self._landed(op))), None
            )
            if op is None:
                kept.append(e)  # not what an operation does: a real event
                continue
            session.add(
                JournalEntry(
                    operation_id=op.id, at=e.at, phase="traffic", text=e.evidence, posted=False
                )
            )
        return kept

    def _landed(self, op: Operation) -> bool:
        """Whether Cloudflare's view (as just read) shows the operation's pool or origin out."""
        track = self.monitor.state.pools.get(op.region)
        if track is None:
            return True
        if op.origin is not None:
            return track.cf_origins is not None and op.origin not in track.cf_origins
        return not track.cf_enabled

    async def on_probe(self, result: ProbeResult) -> bool:
        """Hand one result to the monitor; True when the origin wants confirming at once."""
        track = self.monitor.state.pools[result.region].origins[result.origin]
        before = (track.streak, track.healthy)  # cheaper than a copy, on the hot path
        now = self.clock()
        events = self.monitor.observe(result, now)
        if events:
            async with self._writing, self.sessions.begin() as session:
                owed = await self._commit(session, events, now)
            if owed:
                self.wake()  # committed: the sender posts it now, not at its next sweep
        elif before != (track.streak, track.healthy):
            # A streak begun or ended, no event: written by the tick within STATE_EVERY. One
            # write of every origin's state per result would grow with the fleet (at start, a
            # thousand origins each becoming known rewrote the state a thousand times).
            self._dirty = True
        return self.monitor.pending_confirmation(result.region, result.origin)

    async def poll_cloudflare(self) -> None:
        if self.loadbalancer is None:
            return
        try:
            view = await self.loadbalancer.live_view(self.fleet.load_balancer.hostname)
        except ProviderError as exc:
            log.warning("Cloudflare read failed: %s", exc)
            return
        now = self.clock()
        events = self.monitor.observe_cloudflare(
            view, routing_table(view.load_balancer, view.pools), now
        )
        async with self._writing, self.sessions.begin() as session:
            owed = await self._commit(session, events, now)
        if owed:
            self.wake()
        await self.catch_up()

    async def catch_up(self) -> None:
        """Put Cloudflare's health events since the last one seen into the open incident."""
        if self.loadbalancer is None or not self.events_readable:
            return
        async with self.sessions() as session:
            cursor = await session.get(StoredState, EVENTS_CURSOR)
        since = datetime.fromisoformat(cursor.value["since"]) if cursor else self.clock()
        try:
            found = await self.loadbalancer.health_events(since=since)
        except ProviderAuthError as exc:
            log.warning("%s; carrying on without Cloudflare's health events", exc)
            self.events_readable = False
            return
        except ProviderError as exc:
            log.warning("Cloudflare health events not read: %s", exc)
            return
        fresh = [e for e in found if e.at > since]
        newest = max((e.at for e in fresh), default=since)
        async with self._writing, self.sessions.begin() as session:
            incident = await open_incident(session)
            if incident is not None:
                for e in fresh:
                    origins = "; ".join(
                        f"{o.name} {'healthy' if o.healthy else 'unhealthy'}"
                        + (f" ({o.failure_reason})" if o.failure_reason and not o.healthy else "")
                        for o in e.origins
                        if o.changed
                    )
                    region = self.fleet.region_of_pool(e.pool_name)
                    state = "healthy" if e.pool_healthy else "unhealthy"
                    session.add(
                        TimelineEvent(
                            incident_id=incident.id,
                            at=e.at,
                            kind="CloudflareHealth",
                            region=region,
                            severity="info" if e.pool_healthy else "warning",
                            text=f"Cloudflare: pool {e.pool_name} {state}"
                            + (f": {origins}" if origins else ""),
                            source="cloudflare",
                        )
                    )
            await _store(session, EVENTS_CURSOR, {"since": newest.isoformat()}, self.clock())

    def healthy_since(self) -> dict[str, datetime | None]:
        out: dict[str, datetime | None] = {}
        for region, pool in self.monitor.state.pools.items():
            ok = pool.state is PoolState.HEALTHY and pool.cf_healthy is not False
            out[region] = (pool.since or self.clock() - timedelta(days=1)) if ok else None
        return out

    async def tick(self) -> None:
        """Every second: what time alone brings (RTO Exceeded, gray failures, settling,
        reminders). The monitor's state is written with events, and otherwise at most every
        STATE_EVERY when streaks changed: in the steady state a tick costs no write that grows
        with the pools."""
        now = self.clock()
        events = self.monitor.tick(now)
        async with self._writing, self.sessions.begin() as session:
            owed = (
                await self._commit(session, events, now)
                if events or self._state_due(now)
                else False
            )
            closed = await self.incidents.settle(session, self.healthy_since(), now)
            reminded = await self.incidents.remind(session, now)
        if owed or closed or reminded:
            self.wake()

    def _state_due(self, now: datetime) -> bool:
        written = self._state_written
        return self._dirty and (written is None or (now - written).total_seconds() >= STATE_EVERY)


def _caused(op: Operation, e: Event, landed: bool = True) -> bool:
    """Whether an operation on ``op.region`` moved the traffic of event ``e``.

    ``landed``: Cloudflare's view shows the operation's change (its pool or origin out): until
    then a drain being applied, or a drill disabling, has moved nothing, whatever its state.
    """
    if op.region != e.region:
        return False
    if op.applied_at is None:
        if op.state == OpState.RESTORING:
            pass  # a restore of a pool disabled outside the bot: it moves traffic back
        elif op.state not in (OpState.APPLYING, OpState.SAVING, OpState.DISABLING) or not landed:
            return False  # nothing changed: pending, cancelled, blocked, or the call failed
    if e.kind is EventKind.TRAFFIC_RESTORED:
        return True
    # Where the blast radius said each geo region would go, and whether it would be served.
    predicted = {r.geo: (r.after, r.after_healthy) for r in detail_of(op).blast_rows}
    served = e.kind is EventKind.FAILOVER_TRIGGERED
    return bool(e.geos) and all(predicted.get(geo) == (e.to_region, served) for geo in e.geos)


async def stored_state(
    sessions: async_sessionmaker[AsyncSession], fresh_within: float | None = None
) -> MonitorState | None:
    """The watch's state as the lease holder last wrote it; None when there is none, or when it
    is older than ``fresh_within`` seconds (no watch runs any more)."""
    async with sessions() as session:
        stored = await session.get(StoredState, MONITOR_KEY)
    if stored is None:
        return None
    if fresh_within is not None:
        written = stored.updated_at
        written = written if written.tzinfo else written.replace(tzinfo=UTC)
        if (datetime.now(UTC) - written).total_seconds() > fresh_within:
            return None
    return MonitorState.model_validate(stored.value)


async def _store(session: AsyncSession, name: str, value: dict[str, object], now: datetime) -> None:
    # An UPDATE, not a load and an assignment: the row is never read back and decoded.
    changed = await session.execute(
        update(StoredState).where(StoredState.name == name).values(value=value, updated_at=now)
    )
    if cast(CursorResult[Any], changed).rowcount == 0:
        session.add(StoredState(name=name, value=value, updated_at=now))
