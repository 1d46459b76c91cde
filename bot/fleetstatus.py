"""The fleet's status from every angle, as one read model, and the judgements on it (pure).

The bot's own probes, Cloudflare's view with the routing table it implies (bot/routing.py), what
users get from the public hostname, and the watch's judgement of gray failures: the verdict says
what is wrong for users first. ``bot/status.py`` gathers it within the status deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.detection import Detection
from bot.durations import format_duration
from bot.fleet import Fleet, Region
from bot.lbmodel import LiveView, PoolInfo
from bot.monitor import (
    PROBES_PASS,
    MonitorState,
    PoolState,
    disagreement,
)
from bot.observations import Outcome, ProbeResult
from bot.reads import PublicCheck
from bot.routing import Route, Users, Via, routing_notes, routing_table, stranded_users


@dataclass(frozen=True)
class RegionStatus:
    region: Region
    state: PoolState
    probes: list[ProbeResult]
    pool: PoolInfo | None = None  # Cloudflare's view of the region's pool, when read

    @property
    def summary(self) -> str:
        """Why the region is not healthy, from its worst origins ("d1 error")."""
        if self.state is PoolState.DISABLED:
            return "disabled in Cloudflare"
        if self.state is PoolState.HEALTHY:
            return "healthy"
        reasons: list[str] = []
        for p in self.probes:
            if p.healthy:
                continue
            why = ", ".join(f"{k} {v}" for k, v in p.failing_checks.items()) or p.reason
            reasons.append(why if len(self.probes) == 1 else f"{p.origin}: {why}")
        return "; ".join(dict.fromkeys(reasons))

    @property
    def cloudflare_reasons(self) -> str:
        if self.pool is None:
            return ""
        reasons = [
            o.failure_reason for o in self.pool.origins if o.healthy is False and o.failure_reason
        ]
        return "; ".join(dict.fromkeys(reasons))


@dataclass(frozen=True)
class CloudflareRead:
    view: LiveView | None
    error: str | None = None  # why the view is missing


@dataclass(frozen=True)
class FleetStatus:
    fleet: Fleet
    regions: list[RegionStatus]
    checked_at: datetime
    elapsed: float  # seconds it took
    cloudflare: CloudflareRead | None = None  # None: no Cloudflare credentials configured
    public: list[PublicCheck] = field(default_factory=list)
    watch: MonitorState | None = None  # the watch's judgement, when one runs

    @property
    def view(self) -> LiveView | None:
        return self.cloudflare.view if self.cloudflare else None

    @property
    def routes(self) -> dict[str, Route]:
        if self.view is None:
            return {}
        return routing_table(self.view.load_balancer, self.view.pools)

    @property
    def notes(self) -> list[str]:
        """Where the routing table is not what Cloudflare will do (bot/routing.py)."""
        return routing_notes(self.view.load_balancer) if self.view else []

    def region_of_pool(self, pool_id: str | None) -> str:
        pool = self.view.pools.get(pool_id) if self.view and pool_id else None
        if pool is None:
            return pool_id or "none"
        return self.fleet.region_of_pool(pool.name) or pool.name

    def _detection(self, rs: RegionStatus, side: str) -> float | None:
        monitor = self.view.monitor if self.view else None
        if monitor is None:
            return None
        d = Detection.of(monitor, self.fleet.load_balancer.propagation)
        if side == PROBES_PASS:
            return d.up()
        return d.down(timeouts=any(p.outcome is Outcome.TIMEOUT for p in rs.probes))

    def disagreement(self, rs: RegionStatus) -> str | None:
        """Whether the probes (of the origins Cloudflare has enabled) and Cloudflare disagree."""
        pool = rs.pool
        if pool is None:
            return None
        probes = {p.origin: (p.healthy if p.answered else None) for p in rs.probes}
        enabled = [o.name for o in pool.origins if o.enabled]
        return disagreement(pool.enabled, pool.healthy, probes, enabled, pool.minimum_origins)

    def gray_failure(self, rs: RegionStatus) -> str | None:
        """A disagreement the watch has judged a gray failure (it outlasted Cloudflare's
        detection budget); a shorter one is Cloudflare still noticing (``noticing``)."""
        side = self.disagreement(rs)
        track = self.watch.pools.get(rs.region.name) if self.watch else None
        if side is None or track is None or not track.gray_reported:
            return None
        if track.disagreement != side:
            return None
        name = rs.region.name
        if side == PROBES_PASS:
            why = f" ({rs.cloudflare_reasons})" if rs.cloudflare_reasons else ""
            return (
                f"Cloudflare marks {name} unhealthy{why} but the bot's probes pass, so its traffic "
                "goes elsewhere"
            )
        return (
            f"the bot's probes fail for {name} ({rs.summary}) but Cloudflare still marks it "
            "healthy and sends it traffic"
        )

    def noticing(self, rs: RegionStatus) -> str | None:
        """A disagreement that is not (yet) a gray failure: Cloudflare's monitor catching up."""
        side = self.disagreement(rs)
        if side is None or self.gray_failure(rs):
            return None
        budget = self._detection(rs, side)
        within = f" (its monitor needs up to {format_duration(budget)})" if budget else ""
        if side == PROBES_PASS:
            return f"Cloudflare has not seen {rs.region.name} recover yet{within}"
        return f"Cloudflare has not noticed yet{within} and still sends {rs.region.name} traffic"

    @property
    def gray_failures(self) -> list[str]:
        return [g for r in self.regions if (g := self.gray_failure(r))]

    @property
    def user_problems(self) -> list[str]:
        problems = []
        for check in self.public:
            if check.error:
                named = check.error.startswith(check.where)  # "relay WEU answered nonsense"
                problems.append(check.error if named else f"{check.where}: {check.error}")
            elif not check.ok:
                problems.append(f"users at {check.where} get HTTP {check.status}")
        return problems

    def _traffic(self) -> tuple[list[str], dict[str, list[str]]]:
        """(what went wrong for users, where traffic moved), from Cloudflare's routing."""
        state_of = {r.region.name: r.state for r in self.regions}
        stranded: dict[tuple[str, Users], list[str]] = {}
        moved: dict[str, list[str]] = {}
        for geo, route in self.routes.items():
            to = self.region_of_pool(route.pool_id)
            passing = state_of.get(to) is PoolState.HEALTHY
            if route.users is Users.ORIGIN_ERRORS and passing:
                # Cloudflare sends them to its fallback anyway, whose origins answer the probes.
                where = f"the fallback {to} (marked unhealthy by Cloudflare, passing the probes)"
                moved.setdefault(where, []).append(geo)
            elif not route.healthy:
                stranded.setdefault((to, route.users), []).append(geo)
            elif route.failed_over:
                where = f"the fallback {to}" if route.via is Via.FALLBACK else to
                moved.setdefault(where, []).append(geo)
        problems = [
            f"{' '.join(geos)} have no healthy pool; "
            + stranded_users(users, to, state_of.get(to) is PoolState.DOWN)
            for (to, users), geos in stranded.items()
        ]
        return problems, moved

    def _unseen(self, rs: RegionStatus) -> str | None:
        """What Cloudflare cannot know about a region: not checked yet, or not monitored."""
        pool = rs.pool
        if pool is None or not pool.enabled or pool.healthy is not None:
            return None
        name = rs.region.name
        if pool.monitor_id is not None:
            return f"Cloudflare has not checked {name} since it was enabled: no traffic until then"
        if rs.state is PoolState.DOWN:
            return f"{name} has no monitor, so Cloudflare never notices: it keeps sending traffic"
        return None

    @property
    def _away_by_fault(self) -> bool:
        """Traffic is off its own pool though that pool is not drained."""
        view = self.view
        return view is not None and any(
            route.failed_over
            and (pool := view.pools.get(route.preferred or "")) is not None
            and pool.enabled
            for route in self.routes.values()
        )

    @property
    def healthy(self) -> bool:
        # A drained (disabled) region is a decision, not a fault.
        ok = (PoolState.HEALTHY, PoolState.DISABLED)
        stranded, _ = self._traffic()
        regions_ok = all(r.state in ok for r in self.regions) and not stranded
        regions_ok = regions_ok and not self._away_by_fault
        lb_ok = self.view is None or self.view.load_balancer.enabled
        return regions_ok and lb_ok and not self.gray_failures and not self.user_problems

    @property
    def verdict(self) -> str:
        """One line on top: gray failures first, then regions, users without a pool, moves."""
        parts = [f"gray failure: {g}" for g in self.gray_failures]
        lb = self.view.load_balancer if self.view else None
        if lb is not None and not lb.enabled:
            parts.append(f"the load balancer is disabled: {lb.name} does not load-balance")
        for r in self.regions:
            unseen = self._unseen(r)
            if r.state in (PoolState.HEALTHY, PoolState.DISABLED) or self.gray_failure(r):
                parts += [unseen] if unseen else []
                continue
            noticing = self.noticing(r)
            parts.append(f"{r.region.name} {r.state}: {r.summary}")
            parts += [text for text in (noticing, unseen) if text]
        stranded, moved = self._traffic()
        parts += stranded + self.user_problems
        drained = [r.region.name for r in self.regions if r.state is PoolState.DISABLED]
        if not parts and drained:
            where = "; ".join(f"{' '.join(g)} served by {to}" for to, g in moved.items())
            return f"healthy; {', '.join(drained)} drained" + (f" ({where})" if where else "")
        parts += [f"traffic of {' '.join(g)} failed over to {to}" for to, g in moved.items()]
        if parts:
            return "; ".join(parts)
        return "all healthy" if len(self.regions) > 1 else f"{self.regions[0].region.name} healthy"
