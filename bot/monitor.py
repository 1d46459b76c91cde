"""Observations -> pool states -> events (pure: no I/O, the clock is passed in).

Origins change state only after ``consecutive_down`` failures or ``consecutive_up`` passes in a
row; pools follow their origins. Cloudflare's view adds what steers traffic: failovers, restored
traffic, and gray failures where the two views disagree. RTO Exceeded fires when a pool's outage
has lasted ``rto_alert`` without its geo regions being served healthily elsewhere.

The state is a pydantic model so that the lease holder can store it and a new one carry on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from bot.balancer import LiveView
from bot.fleet import Fleet
from bot.observations import ProbeResult
from bot.routing import Route


class PoolState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # some origins unhealthy
    DOWN = "down"  # every origin unhealthy
    DISABLED = "disabled"  # disabled in the load balancer
    UNKNOWN = "unknown"  # not every origin answered in time, and none failed


def pool_state(results: Sequence[ProbeResult]) -> PoolState:
    """The state of one pool from one round of its origins' probes."""
    answered = [r for r in results if r.answered]
    unhealthy = [r for r in answered if not r.healthy]
    if not results or not answered:
        return PoolState.UNKNOWN
    if len(unhealthy) == len(results):
        return PoolState.DOWN
    if unhealthy:
        return PoolState.DEGRADED
    if len(answered) < len(results):
        return PoolState.UNKNOWN
    return PoolState.HEALTHY


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class EventKind(StrEnum):
    POOL_DEGRADED = "PoolDegraded"
    POOL_DOWN = "PoolDown"
    FAILOVER_TRIGGERED = "FailoverTriggered"
    GRAY_FAILURE = "GrayFailure"
    TRAFFIC_RESTORED = "TrafficRestored"
    RECOVERED = "Recovered"
    RTO_EXCEEDED = "RTOExceeded"

    @property
    def opens_incident(self) -> bool:
        return self in OPENING

    @property
    def severity(self) -> Severity:
        if self in (EventKind.POOL_DOWN, EventKind.RTO_EXCEEDED):
            return Severity.CRITICAL
        if self in (EventKind.TRAFFIC_RESTORED, EventKind.RECOVERED):
            return Severity.INFO
        return Severity.WARNING


OPENING = frozenset(
    {
        EventKind.POOL_DEGRADED,
        EventKind.POOL_DOWN,
        EventKind.FAILOVER_TRIGGERED,
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
    source: str = "bot"  # bot, cloudflare

    @property
    def severity(self) -> Severity:
        return self.kind.severity


class OriginTrack(BaseModel):
    healthy: bool | None = None  # None until confirmed either way
    streak: int = 0  # consecutive results disagreeing with ``healthy``
    streak_since: datetime | None = None
    reason: str = ""
    checks: dict[str, str] = Field(default_factory=dict)


class PoolTrack(BaseModel):
    state: PoolState = PoolState.UNKNOWN
    since: datetime | None = None
    origins: dict[str, OriginTrack] = Field(default_factory=dict)
    cf_healthy: bool | None = None
    cf_enabled: bool = True
    disagreements: int = 0  # consecutive Cloudflare reads disagreeing with the probes
    gray_reported: bool = False
    outage_since: datetime | None = None
    served_elsewhere_at: datetime | None = None
    rto_reported: bool = False


class MonitorState(BaseModel):
    pools: dict[str, PoolTrack] = Field(default_factory=dict)  # by region name
    failed_over: dict[str, str] = Field(default_factory=dict)  # geo -> region serving it
    routes: dict[str, str] = Field(default_factory=dict)  # geo -> region, as last read
    fallback_geos: list[str] = Field(default_factory=list)


@dataclass
class Monitor:
    fleet: Fleet
    state: MonitorState = field(default_factory=MonitorState)

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
        known = [o for o in pool.origins.values() if o.healthy is not None]
        bad = [o for o in known if not o.healthy]
        if not known:
            new = PoolState.UNKNOWN
        elif len(bad) == len(pool.origins):
            new = PoolState.DOWN
        elif bad:
            new = PoolState.DEGRADED
        else:
            new = PoolState.HEALTHY
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
                pool.outage_since = pool.served_elsewhere_at = None
                pool.rto_reported = False
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
        self, view: LiveView, routes: Mapping[str, Route], now: datetime
    ) -> list[Event]:
        events: list[Event] = []
        region_of = {p.id: self.fleet.region_of_pool(p.name) or p.name for p in view.pools.values()}
        for region in self.fleet.regions.values():
            live = view.pool_by_name(region.pool)
            if live is None:
                continue
            pool = self.state.pools[region.name]
            pool.cf_enabled, pool.cf_healthy = live.enabled, live.healthy
            if live.enabled and live.healthy is False and pool.outage_since is None:
                pool.outage_since = now
            events += self._gray(region.name, now)
        served = {geo: region_of.get(r.pool_id or "", "none") for geo, r in routes.items()}
        preferred = {geo: region_of.get(r.preferred or "", "none") for geo, r in routes.items()}
        moved = {geo: to for geo, to in served.items() if to != preferred[geo]}
        fallback = sorted(g for g, r in routes.items() if not r.healthy)
        events += self._traffic(moved, preferred, now)
        self.state.failed_over, self.state.routes = moved, served
        self.state.fallback_geos = fallback
        for name, pool in self.state.pools.items():
            home = [g for g, p in preferred.items() if p == name]
            if pool.outage_since is None or pool.served_elsewhere_at is not None:
                continue
            if home and all(g in moved and g not in fallback for g in home):
                pool.served_elsewhere_at = now
        return events

    def _traffic(
        self, moved: dict[str, str], preferred: dict[str, str], now: datetime
    ) -> list[Event]:
        events: list[Event] = []
        before = self.state.failed_over
        grouped: dict[tuple[str, str], list[str]] = {}
        for geo, to in moved.items():
            if before.get(geo) != to:
                grouped.setdefault((preferred[geo], to), []).append(geo)
        for (origin, to), geos in grouped.items():
            began = self.state.pools[origin].outage_since if origin in self.state.pools else None
            events.append(
                Event(
                    EventKind.FAILOVER_TRIGGERED,
                    now,
                    origin,
                    f"Cloudflare sends {' '.join(geos)} to {to}",
                    began,
                    tuple(geos),
                    to,
                    "cloudflare",
                )
            )
        back: dict[str, list[str]] = {}
        for geo in before:
            if geo not in moved:
                back.setdefault(preferred.get(geo, "none"), []).append(geo)
        for region, geos in back.items():
            events.append(
                Event(
                    EventKind.TRAFFIC_RESTORED,
                    now,
                    region,
                    f"Cloudflare sends {' '.join(geos)} to {region} again",
                    geos=tuple(geos),
                    to_region=region,
                    source="cloudflare",
                )
            )
        return events

    def _gray(self, region: str, now: datetime) -> list[Event]:
        pool = self.state.pools[region]
        disagree = pool.cf_enabled and (
            (pool.state is PoolState.HEALTHY and pool.cf_healthy is False)
            or (pool.state is PoolState.DOWN and pool.cf_healthy is True)
        )
        if not disagree:
            pool.disagreements, pool.gray_reported = 0, False
            return []
        pool.disagreements += 1
        # One read can catch Cloudflare mid-detection; two in a row is a real disagreement.
        if pool.disagreements < 2 or pool.gray_reported:
            return []
        pool.gray_reported = True
        if pool.state is PoolState.DOWN:
            evidence = (
                f"the bot's probes fail ({self._evidence(region)}) but Cloudflare marks it healthy"
            )
        else:
            evidence = "Cloudflare marks it unhealthy but the bot's probes pass"
        return [Event(EventKind.GRAY_FAILURE, now, region, evidence, source="cloudflare")]

    # ------------------------------------------------------------------ time

    def tick(self, now: datetime) -> list[Event]:
        events = []
        limit = self.fleet.watch.rto_alert
        for region, pool in self.state.pools.items():
            if (
                pool.outage_since is None
                or pool.served_elsewhere_at is not None
                or pool.rto_reported
            ):
                continue
            if (now - pool.outage_since).total_seconds() >= limit:
                pool.rto_reported = True
                events.append(
                    Event(
                        EventKind.RTO_EXCEEDED,
                        now,
                        region,
                        f"{limit:g} s since the outage began and {region}'s users are not served "
                        "by a healthy pool",
                        pool.outage_since,
                    )
                )
        for pool in self.state.pools.values():
            # Cloudflare's view of a recovery may come after the probes': close the outage then.
            if (
                pool.state is PoolState.HEALTHY
                and pool.cf_healthy is not False
                and pool.outage_since
            ):
                pool.outage_since = pool.served_elsewhere_at = None
                pool.rto_reported = False
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
