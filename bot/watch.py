"""The watch: probe results and Cloudflare reads through the monitor into incidents and posts.

Run only by the lease holder. The monitor's state is written in the same transaction as the
incident changes and the posts they owe, so a new leader carries on where this one stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics, sightings
from bot.db.models import (
    CloudflareNotification,
    JournalEntry,
    Operation,
    StoredState,
    TimelineEvent,
)
from bot.errors import ProviderAuthError, ProviderError
from bot.fleet import Fleet
from bot.incidents import Incidents, open_incident
from bot.lbmodel import LiveView
from bot.monitor import Event, EventKind, Monitor, MonitorState, PoolState, Sighting
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
        # The last read of the load balancer, with the notifications applied since: what a
        # notification's routes are computed from.
        self._view: LiveView | None = None

    async def load(self) -> None:
        """Take over the stored state (a new leader starts where the last one stopped)."""
        state = await stored_state(self.sessions)
        self.monitor = Monitor(self.fleet, state or MonitorState())

    async def _commit(
        self, session: AsyncSession, events: list[Event], now: datetime, store: bool = True
    ) -> bool:
        """Write the monitor's state (unless ``store`` is False: the caller writes it once) and
        what the events change; True when posts are owed."""
        self._publish_states()
        events = await self._divert_operation_traffic(session, events, now)
        await self.incidents.apply(session, events, now)
        if store:
            await self._store_state(session, now)
        return bool(events)

    async def _store_state(self, session: AsyncSession, now: datetime) -> None:
        # Defaults left out (they load back as defaults): at 1,000 pools a third of the size,
        # and each write's transient dict, JSON and SQLite copies with it.
        state = self.monitor.state.model_dump(mode="json", exclude_defaults=True)
        await _store(session, MONITOR_KEY, state, now)
        self._dirty, self._state_written = False, now

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
        async with self._writing:
            view, confirmed = self._sight_read(view, now)
            self._view = view
            events = self.monitor.observe_cloudflare(
                view, routing_table(view.load_balancer, view.pools), now
            )
            async with self.sessions.begin() as session:
                owed = await self._commit(session, events, now)
                await _retext(session, confirmed)
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
            now = self.clock()
            for e in fresh:
                # The same change as a read or a notification showed: one change, one entry.
                known = sightings.health_event(
                    self.monitor.state, e.pool_name, e.pool_healthy, e.at, now
                )
                self._dirty = self._dirty or known is not None
                if incident is None or (known is not None and known.entry_id is not None):
                    continue
                origins = "; ".join(
                    f"{o.name} {'healthy' if o.healthy else 'unhealthy'}"
                    + (f" ({o.failure_reason})" if o.failure_reason and not o.healthy else "")
                    for o in e.origins
                    if o.changed
                )
                region = self.fleet.region_of_pool(e.pool_name)
                state = "healthy" if e.pool_healthy else "unhealthy"
                entry = TimelineEvent(
                    incident_id=incident.id,
                    at=e.at,
                    kind="CloudflareHealth",
                    region=region,
                    severity="info" if e.pool_healthy else "warning",
                    text=f"Cloudflare: pool {e.pool_name} {state}"
                    + (f": {origins}" if origins else ""),
                    source="cloudflare",
                )
                session.add(entry)
                if known is not None:  # a notification that follows adds to this entry
                    await session.flush()
                    known.entry_id, known.entry_source = entry.id, sightings.EVENTS
                    known.head = entry.text
            await _store(session, EVENTS_CURSOR, {"since": newest.isoformat()}, self.clock())

    # ------------------------------------------------------------------ Cloudflare's notifications

    def _sight_read(self, view: LiveView, now: datetime) -> tuple[LiveView, list[Sighting]]:
        """Note what a read shows, pool by pool and origin by origin (bot/sightings.py).

        Returns the view to observe (a notified change the read was asked too early to see
        stands) and the changes a notification showed first that this read confirms.
        """
        read_at = view.read_at or now
        state, confirmed = self.monitor.state, []
        for region in self.fleet.regions.values():
            live = view.pool_by_name(region.pool)
            if live is None or not live.enabled:
                continue
            shown = [(None, live.healthy)] + [(o.name, o.healthy) for o in live.origins]
            for origin, healthy in shown:
                name = sightings.key(live.name, origin)
                known = state.sightings.get(name)
                if known is not None and sightings.stands_against(known, healthy, read_at):
                    if origin is None:
                        view = _with_health(view, live.id, known.healthy)
                    continue
                if origin is not None and sightings.forgotten(known, healthy, read_at):
                    del state.sightings[name]
                    continue
                if healthy is None or (origin is not None and healthy and known is None):
                    # An origin healthy as ever is no change to remember: its sighting starts
                    # with a notification or a read showing it unhealthy (at 1,000 origins, one
                    # each would grow every write of the state and the bot's memory).
                    continue
                found = sightings.read(state, name, healthy, read_at)
                if found is not None and found.entry_source == sightings.NOTIFICATION:
                    confirmed.append(found)
        return view, confirmed

    async def apply_notifications(self) -> int:
        """Apply the notifications any instance stored, in order; the number applied."""
        async with self._writing:
            before: tuple[MonitorState, LiveView | None] | None = None
            try:
                async with self.sessions.begin() as session:
                    rows = list(
                        await session.scalars(
                            select(CloudflareNotification)
                            .where(CloudflareNotification.handled_at.is_(None))
                            .order_by(CloudflareNotification.id)
                            .limit(100)
                        )
                    )
                    if not rows:
                        return 0
                    # The rows stay unhandled if this transaction fails: the monitor must then
                    # not know them either, or their second application would find them known.
                    before = (self.monitor.state.model_copy(deep=True), self._view)
                    owed, now = False, self.clock()
                    for row in rows:
                        now = self.clock()
                        events, entry = self._notified(row, now)
                        owed = await self._commit(session, events, now, store=False) or owed
                        if entry is not None:
                            await self._enter(session, row, *entry)
                        row.handled_at = now
                        log.info("Cloudflare notification %d: %s", row.id, row.result)
                    await self._store_state(session, now)  # once for the batch
            except BaseException:
                if before is not None:
                    self._restore(*before)
                raise
        if owed:
            self.wake()
        return len(rows)

    def _restore(self, state: MonitorState, view: LiveView | None) -> None:
        """The monitor as it was before a batch of notifications whose transaction failed. What
        the probes changed meanwhile (they observe outside the lock) is theirs: kept."""
        for region, track in self.monitor.state.pools.items():
            if region in state.pools:
                kept = state.pools[region]
                kept.origins, kept.state, kept.since = track.origins, track.state, track.since
        self.monitor = Monitor(self.fleet, state)
        self._view, self._dirty = view, True
        self._published.clear()  # the gauges were set from what is now undone

    def _pool_name(self, row: CloudflareNotification) -> str | None:
        """The notification's pool by name: given by name, or by id mapped through the last read."""
        given = row.pool or str(row.data.get("pool_id") or "") or None
        if given is None or self.fleet.region_of_pool(given) is not None:
            return given
        if self._view is not None and given in self._view.pools:
            return self._view.pools[given].name
        return given

    def _notified(
        self, row: CloudflareNotification, now: datetime
    ) -> tuple[list[Event], tuple[Sighting, str, str, str] | None]:
        """One notification as an observation: the events it brings and, for the timeline, the
        change it belongs to, its region and what to say. Sets ``row.result``."""
        name = self._pool_name(row)
        region = self.fleet.region_of_pool(name) if name else None
        if name is None or region is None:
            row.result = f"unknown pool {name or '(none given)'}"[:128]
            return [], None
        if row.healthy is None:
            row.result = "not applied: the health is neither healthy nor unhealthy"
            return [], None
        origin = row.origin
        known_origins = {o.name for o in self.fleet.regions[region].origins}
        if origin is not None and origin not in known_origins:
            row.result = f"unknown origin {origin} of pool {name}"[:128]
            return [], None
        what = f"origin {origin} of pool {name}" if origin else f"pool {name}"
        verdict = sightings.notified(
            self.monitor.state,
            sightings.key(name, origin),
            row.healthy,
            row.notified_at,
            row.received_at,
            what,
        )
        row.result = verdict.result[:128]
        self._dirty = True
        if verdict.sighting is None:
            return [], None
        reason = str(row.data.get("reason") or "").strip()
        head = f"Cloudflare notification: {what} {sightings.health_word(row.healthy)}"
        head += f" at {row.notified_at:%H:%M:%S}" + (f" ({reason[:200]})" if reason else "")
        entry = (verdict.sighting, region, head, verdict.suffix)
        if not verdict.apply:
            return [], entry if verdict.suffix else None
        if origin is not None:
            return [], entry  # the pool's own health comes in its own notification
        track = self.monitor.state.pools[region]
        if not row.healthy and track.cf_enabled:
            # Cloudflare's own time is the earliest sign of the outage.
            since = track.outage_since
            track.outage_since = min(since, row.notified_at) if since else row.notified_at
        if self._view is None:
            track.cf_healthy = row.healthy  # the routes follow at the next read
            return [], entry
        pool = self._view.pool_by_name(name)
        if pool is None:
            return [], entry
        self._view = _with_health(self._view, pool.id, row.healthy)
        view = self._view
        routes = routing_table(view.load_balancer, view.pools)
        return self.monitor.observe_cloudflare(view, routes, now, "notification"), entry

    async def _enter(
        self,
        session: AsyncSession,
        row: CloudflareNotification,
        known: Sighting,
        region: str,
        head: str,
        suffix: str,
    ) -> None:
        """The notification in the open incident's timeline: one entry per change."""
        if known.entry_id is not None:
            if known.entry_source == sightings.EVENTS:  # Cloudflare's health event said it
                text = f"{known.head}; then Cloudflare's notification ({suffix})"
                await session.execute(
                    update(TimelineEvent)
                    .where(TimelineEvent.id == known.entry_id)
                    .values(text=text)
                )
            return
        incident = await open_incident(session)
        if incident is None:
            return
        entry = TimelineEvent(
            incident_id=incident.id,
            at=row.notified_at,
            kind="CloudflareNotification",
            region=region,
            severity="info" if row.healthy else "warning",
            text=f"{head} ({suffix})",
            source="notification",
        )
        session.add(entry)
        await session.flush()
        known.entry_id, known.entry_source, known.head = entry.id, sightings.NOTIFICATION, head

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


# The values are bound at execution, not in the statement: SQLAlchemy's statement cache keeps
# the first statement it compiled, which would otherwise keep a whole dump of the monitor's state
# (about 1 MB at 1,000 pools) alive for as long as the process runs.
_UPDATE_STATE = (
    update(StoredState)
    .where(StoredState.name == bindparam("state_name"))
    .values(
        value=bindparam("state_value", type_=StoredState.value.type),
        updated_at=bindparam("state_at", type_=StoredState.updated_at.type),
    )
    .execution_options(synchronize_session=False)  # the row is never loaded as an object
)


async def _store(session: AsyncSession, name: str, value: dict[str, object], now: datetime) -> None:
    # An UPDATE, not a load and an assignment: the row is never read back and decoded.
    changed = await session.execute(
        _UPDATE_STATE, {"state_name": name, "state_value": value, "state_at": now}
    )
    if cast(CursorResult[Any], changed).rowcount == 0:
        session.add(StoredState(name=name, value=value, updated_at=now))


def _with_health(view: LiveView, pool_id: str, healthy: bool) -> LiveView:
    """``view`` with one pool's health as Cloudflare notified it (the rest as last read)."""
    pools = dict(view.pools)
    pools[pool_id] = replace(pools[pool_id], healthy=healthy)
    return replace(view, pools=pools)


async def _retext(session: AsyncSession, confirmed: list[Sighting]) -> None:
    """A read confirms changes notifications showed first: their entries say by how much."""
    for known in confirmed:
        if known.entry_id is not None:
            await session.execute(
                update(TimelineEvent)
                .where(TimelineEvent.id == known.entry_id)
                .values(text=sightings.confirmed_text(known))
            )
