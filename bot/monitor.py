"""Observations -> pool states -> events (pure: no I/O, the clock is passed in).

Origins change state only after ``consecutive_down`` failures or ``consecutive_up`` passes in a
row; pools follow their origins. Cloudflare's view adds what steers traffic (bot/routing.py):
where each geo region's users are sent, and what they get there. A geo region sent away from its
own pool is a Failover Triggered naming the real destination, the fallback and its health
included; RTO Exceeded fires when a geo region's users have had no healthy pool for
``rto_alert``; a Gray Failure is a disagreement between the probes and Cloudflare that outlasts
Cloudflare's own detection budget (bot/detection.py), never a plain outage or recovery that
Cloudflare is still noticing.

The state is a pydantic model (of dataclasses) so that the lease holder can store it and a new
one carry on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from bot.detection import Detection
from bot.fleet import Fleet
from bot.lbmodel import LiveView
from bot.observations import Outcome, ProbeResult
from bot.planned import planned_view
from bot.routing import Route, Users, Via, healthy_enough, routing_table, stranded_users


class PoolState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # some origins unhealthy
    DOWN = "down"  # every origin unhealthy
    DISABLED = "disabled"  # disabled in the load balancer
    UNKNOWN = "unknown"  # not every origin answered in time, and none failed


def state_of(origins: Sequence[bool | None]) -> PoolState:
    """A pool's state from its origins' health (None: not known): the one rule, used by the
    watch (confirmed health) and by status (one round of probes)."""
    bad = sum(1 for healthy in origins if healthy is False)
    if origins and bad == len(origins):
        return PoolState.DOWN
    if bad:
        return PoolState.DEGRADED
    if not origins or None in origins:
        return PoolState.UNKNOWN
    return PoolState.HEALTHY


def pool_state(results: Sequence[ProbeResult]) -> PoolState:
    """The state of one pool from one round of its origins' probes."""
    return state_of([r.healthy if r.answered else None for r in results])


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class EventKind(StrEnum):
    POOL_DEGRADED = "PoolDegraded"
    POOL_DOWN = "PoolDown"
    FAILOVER_TRIGGERED = "FailoverTriggered"
    # Geo regions sent to an unhealthy or disabled fallback: not a failover, users get errors.
    NO_HEALTHY_POOL = "NoHealthyPool"
    GRAY_FAILURE = "GrayFailure"
    TRAFFIC_RESTORED = "TrafficRestored"
    RECOVERED = "Recovered"
    RTO_EXCEEDED = "RTOExceeded"

    @property
    def opens_incident(self) -> bool:
        return self in OPENING

    @property
    def severity(self) -> Severity:
        if self in (EventKind.POOL_DOWN, EventKind.RTO_EXCEEDED, EventKind.NO_HEALTHY_POOL):
            return Severity.CRITICAL
        if self in (EventKind.TRAFFIC_RESTORED, EventKind.RECOVERED):
            return Severity.INFO
        return Severity.WARNING


OPENING = frozenset(
    {
        EventKind.POOL_DEGRADED,
        EventKind.POOL_DOWN,
        EventKind.FAILOVER_TRIGGERED,
        EventKind.NO_HEALTHY_POOL,
        EventKind.GRAY_FAILURE,
    }
)


@dataclass(frozen=True)
class Event:
    kind: EventKind
    at: datetime  # when it was confirmed
    region: str
    evidence: str
    began_at: datetime | None = None  # when the first sign of it was seen
    geos: tuple[str, ...] = ()
    to_region: str | None = None
    source: str = "bot"  # bot, cloudflare (an API read), notification (Cloudflare's)

    @property
    def severity(self) -> Severity:
        return self.kind.severity


# One of each per origin and per pool: slotted dataclasses (pydantic validates and dumps them
# inside MonitorState all the same) take a tenth of a model's memory, which keeps a dict of
# fields and a set of those assigned, about 2 MB at 1,000 pools (bench/monitor.py).
@dataclass(slots=True)
class OriginTrack:
    healthy: bool | None = None  # None until confirmed either way
    streak: int = 0  # consecutive results disagreeing with ``healthy``
    streak_since: datetime | None = None
    reason: str = ""
    timed_out: bool = False  # the last failure was a timeout (Cloudflare then retries)
    checks: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PoolTrack:
    state: PoolState = PoolState.UNKNOWN
    since: datetime | None = None
    origins: dict[str, OriginTrack] = field(default_factory=dict)
    cf_healthy: bool | None = None  # None: not reported (no monitor, or not checked yet)
    cf_enabled: bool = True
    cf_origins: list[str] | None = None  # the origins Cloudflare has enabled; None until read
    cf_minimum: int = 1
    disagreement: str | None = None  # "probes fail" or "probes pass", against Cloudflare
    disagree_since: datetime | None = None
    gray_reported: bool = False
    outage_since: datetime | None = None


class Sighting(BaseModel):
    """One change of Cloudflare's health for a pool (keyed by its name) or an origin
    ("pool/origin"), as the sources that show it to the bot saw it: the API read, Cloudflare's
    notification, its health events (bot/sightings.py). One change seen by several sources is one
    change."""

    healthy: bool
    at: datetime  # when it changed: the earliest time a source gives (Cloudflare's own if any)
    first: str  # the source that showed it to the bot first
    seen: dict[str, datetime] = Field(default_factory=dict)  # source -> when the bot learnt it
    last_read: datetime | None = None  # the last API read that showed it
    entry_id: int | None = None  # the incident's timeline entry about it, if written
    entry_source: str | None = None  # who wrote that entry
    head: str = ""  # the entry's text before what says who saw it first


class MonitorState(BaseModel):
    pools: dict[str, PoolTrack] = Field(default_factory=dict)  # by region name
    routes: dict[str, str] = Field(default_factory=dict)  # geo -> region serving it, as last read
    failed_over: dict[str, str] = Field(default_factory=dict)  # geo -> region, not its own
    stranded: dict[str, str] = Field(default_factory=dict)  # geo -> what its users get instead
    route_users: dict[str, Users] = Field(default_factory=dict)  # geo -> when not served healthily
    destinations: dict[str, str] = Field(default_factory=dict)  # geo -> where, when away
    homes: dict[str, str] = Field(default_factory=dict)  # geo -> its own region
    unserved_since: dict[str, datetime] = Field(default_factory=dict)  # no healthy pool since
    rto_reported: list[str] = Field(default_factory=list)  # geo regions already alerted
    cloudflare_read_at: datetime | None = None
    # Seconds Cloudflare needs to notice (bot/detection.py), from the last read of its monitor.
    notice: dict[str, float] = Field(default_factory=dict)
    # Cloudflare's last health change per pool and origin, and who saw it first (stored JSON:
    # a state written before this field existed loads with none).
    sightings: dict[str, Sighting] = Field(default_factory=dict)


PROBES_FAIL = "probes fail"  # the bot's probes fail, Cloudflare marks the pool healthy
PROBES_PASS = "probes pass"  # the bot's probes pass, Cloudflare marks the pool unhealthy
MARGIN = 1.0  # seconds: the watch's own tick


def disagreement(
    enabled: bool,
    cloudflare_healthy: bool | None,
    probes: Mapping[str, bool | None],
    cloudflare_origins: Iterable[str] | None,
    minimum_origins: int,
) -> str | None:
    """How the probes and Cloudflare disagree about one pool, if they do.

    ``probes`` is each origin's health by the bot (None: not known); only the origins Cloudflare
    has enabled count (``cloudflare_origins``, None: all), since a drained origin is no fault.
    """
    if not enabled or cloudflare_healthy is None:
        return None  # drained, or Cloudflare has not checked it yet
    names = list(probes) if cloudflare_origins is None else list(cloudflare_origins)
    verdicts = [probes[n] for n in names if n in probes]
    if any(v is None for v in verdicts):
        return None
    probes_healthy = healthy_enough(verdicts, minimum_origins)
    if probes_healthy == cloudflare_healthy:
        return None
    return PROBES_PASS if probes_healthy else PROBES_FAIL


@dataclass
class Monitor:
    fleet: Fleet
    state: MonitorState = field(default_factory=MonitorState)

    # The routes of the plan for the pools found down, kept while the same pools are down.
    _planned: tuple[frozenset[str], dict[str, tuple[str, str, str | None]]] | None = field(
        default=None, init=False, repr=False
    )

    def __post_init__(self) -> None:
        for region in self.fleet.regions.values():
            track = self.state.pools.setdefault(region.name, PoolTrack())
            for origin in region.origins:
                track.origins.setdefault(origin.name, OriginTrack())

    # ------------------------------------------------------------------ probes

    def pending_confirmation(self, region: str, origin: str) -> bool:
        """True when a change is seen but not yet confirmed: worth re-probing at once."""
        track = self.state.pools[region].origins[origin]
        return track.streak > 0

    def observe(self, result: ProbeResult, now: datetime) -> list[Event]:
        if not result.answered:
            return []  # the bot gave up waiting: that says nothing about the origin
        pool = self.state.pools[result.region]
        track = pool.origins[result.origin]
        m = self.fleet.monitor
        track.reason, track.checks = result.reason, dict(result.failing_checks)
        if not result.healthy:
            track.timed_out = result.outcome is Outcome.TIMEOUT
        if track.healthy is result.healthy:
            track.streak, track.streak_since = 0, None
            return []
        track.streak += 1
        track.streak_since = track.streak_since or result.at
        needed = m.consecutive_up if result.healthy else m.consecutive_down
        if track.streak < needed:
            return []
        began = track.streak_since
        track.healthy, track.streak, track.streak_since = result.healthy, 0, None
        return self._pool_changed(result.region, now, began)

    def _pool_changed(self, region: str, now: datetime, began: datetime | None) -> list[Event]:
        pool = self.state.pools[region]
        new = state_of([o.healthy for o in pool.origins.values()])
        old = pool.state
        if new is old:
            return []
        pool.state, pool.since = new, now
        evidence = self._evidence(region)
        if new is PoolState.DOWN:
            pool.outage_since = pool.outage_since or began or now
            return [Event(EventKind.POOL_DOWN, now, region, evidence, began)]
        if new is PoolState.DEGRADED:
            return [Event(EventKind.POOL_DEGRADED, now, region, evidence, began)]
        if new is PoolState.HEALTHY and old in (PoolState.DOWN, PoolState.DEGRADED):
            if pool.cf_healthy is not False:
                pool.outage_since = None
            return [
                Event(
                    EventKind.RECOVERED, now, region, "every origin passes its health check", began
                )
            ]
        return []

    def _evidence(self, region: str) -> str:
        pool = self.state.pools[region]
        parts = []
        for name, o in pool.origins.items():
            if o.healthy is False:
                checks = ", ".join(f"{k} {v}" for k, v in o.checks.items())
                parts.append(f"{name}: {checks or o.reason}")
        return "; ".join(parts) or "healthy"

    # ------------------------------------------------------------------ Cloudflare

    def observe_cloudflare(
        self, view: LiveView, routes: Mapping[str, Route], now: datetime, source: str = "cloudflare"
    ) -> list[Event]:
        """``source``: what showed the view (an API read, or a notification applied to the last
        read), named by the events it brings."""
        self.state.cloudflare_read_at = now
        if view.monitor is not None:
            d = Detection.of(view.monitor, self.fleet.load_balancer.propagation)
            self.state.notice = {"down": d.down(), "timeouts": d.down(True), "up": d.up()}
        for planned in self.fleet.regions.values():
            live = view.pool_by_name(planned.pool)
            if live is None:
                continue
            pool = self.state.pools[planned.name]
            pool.cf_enabled, pool.cf_healthy = live.enabled, live.healthy
            pool.cf_origins = [o.name for o in live.origins if o.enabled]
            pool.cf_minimum = live.minimum_origins
            if live.enabled and live.healthy is False and pool.outage_since is None:
                pool.outage_since = now
        region_of = self.fleet.region_names(view.pools.values())
        events = self._traffic(routes, region_of, now, source)
        for region in self.fleet.regions:
            events += self._gray(region, now, source)
        return events + self._unserved(now)

    def _traffic(
        self,
        routes: Mapping[str, Route],
        region_of: Mapping[str, str],
        now: datetime,
        source: str = "cloudflare",
    ) -> list[Event]:
        """Failover Triggered where Cloudflare sends a geo region to another healthy pool, No
        Healthy Pool where to an unhealthy or disabled fallback; Traffic Restored where home."""

        def name(pool_id: str | None) -> str:
            return region_of.get(pool_id or "", pool_id or "none")

        before = self.state.destinations
        homes = {geo: name(r.preferred) for geo, r in routes.items()}
        destinations = {
            geo: _destination(r, name(r.pool_id)) for geo, r in routes.items() if r.away
        }
        grouped: dict[tuple[str, str], list[str]] = {}
        for geo, where in destinations.items():
            if before.get(geo) != where:
                grouped.setdefault((homes[geo], where), []).append(geo)
        events = []
        for (home, _), geos in grouped.items():
            r = routes[geos[0]]
            to = name(r.pool_id)
            began = self.state.pools[home].outage_since if home in self.state.pools else None
            stranded = self._stranded(r.users, to)
            kind = EventKind.NO_HEALTHY_POOL if stranded else EventKind.FAILOVER_TRIGGERED
            events.append(
                Event(
                    kind,
                    now,
                    home,
                    _sent(geos, r, to, home, stranded),
                    began,
                    tuple(geos),
                    to,
                    source,
                )
            )
        back: dict[str, list[str]] = {}
        for geo in before:
            if geo not in destinations and geo in homes:
                back.setdefault(homes[geo], []).append(geo)
        for home, geos in back.items():
            events.append(
                Event(
                    EventKind.TRAFFIC_RESTORED,
                    now,
                    home,
                    f"Cloudflare sends {' '.join(geos)} to {home} again",
                    geos=tuple(geos),
                    to_region=home,
                    source=source,
                )
            )
        s = self.state
        s.destinations, s.homes = destinations, homes
        s.routes = {geo: name(r.pool_id) for geo, r in routes.items()}
        s.failed_over = {geo: s.routes[geo] for geo, r in routes.items() if r.failed_over}
        s.route_users = {geo: r.users for geo, r in routes.items() if not r.healthy}
        self._refresh_stranded()
        return events

    def _stranded(self, users: Users, to: str) -> str | None:
        """What users sent to ``to`` get when it is not a healthy pool; None when served.

        Cloudflare sends them to the fallback whatever its health, and they get what its origins
        answer: the probes of the fallback tell whether that is errors.
        """
        if users is Users.SERVED:
            return None
        state = self.state.pools[to].state if to in self.state.pools else None
        if users is Users.ORIGIN_ERRORS and state is PoolState.HEALTHY:
            return None  # Cloudflare marks it unhealthy, but its origins answer the probes
        return stranded_users(users, to, state is PoolState.DOWN)

    def _refresh_stranded(self) -> None:
        s = self.state
        stranded = {g: self._stranded(u, s.routes.get(g, "none")) for g, u in s.route_users.items()}
        s.stranded = {g: text for g, text in stranded.items() if text is not None}

    def _gray(self, region: str, now: datetime, source: str = "cloudflare") -> list[Event]:
        """A Gray Failure once the probes and Cloudflare disagree for longer than Cloudflare
        needs to notice (bot/detection.py) plus the bot's own probing and reading."""
        pool = self.state.pools[region]
        side = self._disagreement(pool)
        if side != pool.disagreement:
            pool.disagreement, pool.gray_reported = side, False
            pool.disagree_since = now if side else None
        if side is None or pool.gray_reported or pool.disagree_since is None:
            return []
        budget = self.gray_budget(pool)
        lasted = (now - pool.disagree_since).total_seconds()
        if budget is None or lasted < budget:
            return []
        pool.gray_reported = True
        if side == PROBES_FAIL:
            evidence = (
                f"the bot's probes fail ({self._evidence(region)}) but Cloudflare marks it healthy "
                f"and sends it traffic, for {lasted:.0f} s; its monitor notices within about "
                f"{budget:.0f} s"
            )
        else:
            evidence = (
                f"Cloudflare marks it unhealthy but the bot's probes pass, for {lasted:.0f} s; "
                f"its monitor sees a recovery within about {budget:.0f} s"
            )
        since = pool.disagree_since
        return [Event(EventKind.GRAY_FAILURE, now, region, evidence, since, source=source)]

    @staticmethod
    def _disagreement(pool: PoolTrack) -> str | None:
        if not pool.cf_enabled or pool.cf_healthy is None:
            return None  # as disagreement() says, without building its arguments every tick
        probes = {name: o.healthy for name, o in pool.origins.items()}
        return disagreement(
            pool.cf_enabled, pool.cf_healthy, probes, pool.cf_origins, pool.cf_minimum
        )

    def gray_budget(self, pool: PoolTrack) -> float | None:
        """Seconds a disagreement may last before it is a Gray Failure (None: Cloudflare unread)."""
        notice = self.state.notice
        if not notice:
            return None
        w = self.fleet.watch
        if pool.disagreement == PROBES_FAIL:
            timeouts = any(o.timed_out for o in pool.origins.values() if o.healthy is False)
            cloudflare = notice["timeouts" if timeouts else "down"]
        else:
            cloudflare = notice["up"]
        # Whichever side notices last, then our next read of Cloudflare.
        return max(cloudflare, w.probe_interval) + w.cloudflare_poll + MARGIN

    # ------------------------------------------------------------------ users without a pool

    def _exposure(self) -> dict[str, tuple[str, str, str | None]]:
        """geo -> (region serving it, its own region, what its users get instead when stranded).

        From the last Cloudflare read; without one (Cloudflare not configured), from the plan in
        failover.toml with the probes' health, so that RTO Exceeded still fires.
        """
        s = self.state
        if s.cloudflare_read_at is not None:
            self._refresh_stranded()  # the probes may have changed their mind since the read
            return {g: (to, s.homes.get(g, to), s.stranded.get(g)) for g, to in s.routes.items()}
        down = frozenset(r for r, p in s.pools.items() if p.state is PoolState.DOWN)
        if self._planned is not None and self._planned[0] == down:
            return self._planned[1]  # the same pools down: the same routes (every tick)
        view = planned_view(self.fleet, {r: r not in down for r in s.pools})
        out = {}
        for geo, r in routing_table(view.load_balancer, view.pools).items():
            to = self.fleet.region_of_pool(r.pool_id or "") or "none"
            home = self.fleet.region_of_pool(r.preferred or "") or "none"
            out[geo] = (to, home, None if r.healthy else stranded_users(r.users, to, True))
        self._planned = (down, out)
        return out

    def _unserved(self, now: datetime) -> list[Event]:
        """RTO Exceeded for geo regions whose users have had no healthy pool for rto_alert."""
        s, limit = self.state, self.fleet.watch.rto_alert
        why: dict[str, str] = {}
        exposure = self._exposure()
        for geo, (to, home, stranded) in exposure.items():
            pool = s.pools.get(to)
            if stranded is None and not (pool and pool.state is PoolState.DOWN):
                s.unserved_since.pop(geo, None)
                continue
            # Cloudflare may still send users to a pool the probes find down: they get errors.
            why[geo] = (
                stranded or f"Cloudflare still sends them to {to}, which the probes find down"
            )
            # Since their own pool's outage began: the fallback may have been down for longer.
            own = s.pools.get(home)
            s.unserved_since.setdefault(geo, (own.outage_since if own else None) or now)
        s.rto_reported = [g for g in s.rto_reported if g in s.unserved_since]
        due: dict[tuple[str, str], list[str]] = {}
        homes = {g: home for g, (_, home, _) in exposure.items()}
        for geo, since in s.unserved_since.items():
            if geo not in s.rto_reported and (now - since).total_seconds() >= limit:
                due.setdefault((homes.get(geo, "none"), why[geo]), []).append(geo)
        events = []
        for (home, reason), geos in due.items():
            s.rto_reported += geos
            events.append(
                Event(
                    EventKind.RTO_EXCEEDED,
                    now,
                    home,
                    f"{' '.join(geos)} have had no healthy pool for {limit:g} s: {reason}",
                    min(s.unserved_since[g] for g in geos),
                    tuple(geos),
                )
            )
        return events

    # ------------------------------------------------------------------ time

    def tick(self, now: datetime) -> list[Event]:
        events: list[Event] = []
        for region in self.fleet.regions:
            events += self._gray(region, now)
        events += self._unserved(now)
        for pool in self.state.pools.values():
            # Cloudflare's view of a recovery may come after the probes': close the outage then.
            if (
                pool.outage_since is not None
                and pool.state is PoolState.HEALTHY
                and pool.cf_healthy is not False
            ):
                pool.outage_since = None
        return events

    def states(self) -> dict[str, PoolState]:
        return {
            name: (PoolState.DISABLED if not p.cf_enabled else p.state)
            for name, p in self.state.pools.items()
        }

    def healthy_regions(self) -> Iterable[str]:
        return (
            n
            for n, p in self.state.pools.items()
            if p.state is PoolState.HEALTHY and p.cf_healthy is not False
        )


def _destination(r: Route, to: str) -> str:
    """Where a geo region away from its own pool is sent: a key that changes when that changes."""
    return to if r.via is not Via.FALLBACK else f"fallback {to} ({r.users})"


def _sent(geos: list[str], r: Route, to: str, home: str, stranded: str | None) -> str:
    """A traffic event's evidence: the real destination and what users get there."""
    listed = " ".join(geos)
    if r.via is not Via.FALLBACK:
        return f"Cloudflare sends {listed} to {to}"
    if stranded is None:
        health = "healthy" if r.users is Users.SERVED else "marked unhealthy, but the probes pass"
        return (
            f"no healthy pool in the list of {listed}: Cloudflare sends them to the fallback "
            f"{to}, which is {health}"
        )
    itself = f" (no failover: {to} is their own pool)" if to == home else ""
    return f"{listed} have no healthy pool: {stranded}{itself}"
