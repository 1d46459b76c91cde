"""The fleet's status from every angle, gathered at once within the status deadline.

The bot's own probes, Cloudflare's view (pools, health, steering, monitor) with the routing table
it implies, and what users get from the public hostname. Whatever has not answered by the
deadline is reported as missing, with why.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.balancer import LiveView, PoolInfo
from bot.errors import ProviderError
from bot.fleet import Fleet, Region
from bot.health import Prober
from bot.loadbalancer.port import LoadBalancer
from bot.monitor import PoolState, pool_state
from bot.observations import ProbeResult
from bot.routing import Route, routing_table
from bot.userview import PublicCheck, UserView

# Time kept back from the deadline for rendering and posting the answer.
RENDER_MARGIN = 0.3


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

    @property
    def routes(self) -> dict[str, Route]:
        if self.cloudflare is None or self.cloudflare.view is None:
            return {}
        return routing_table(self.cloudflare.view.load_balancer, self.cloudflare.view.pools)

    def region_of_pool(self, pool_id: str | None) -> str:
        view = self.cloudflare.view if self.cloudflare else None
        pool = view.pools.get(pool_id) if view and pool_id else None
        if pool is None:
            return pool_id or "none"
        return self.fleet.region_of_pool(pool.name) or pool.name

    def _detection(self, up: bool) -> str:
        monitor = self.cloudflare.view.monitor if self.cloudflare and self.cloudflare.view else None
        if monitor is None:
            return ""
        checks = max(1, monitor.consecutive_up if up else monitor.consecutive_down)
        return f" (its monitor needs {checks} × {monitor.interval:g} s to notice)"

    def gray_failure(self, rs: RegionStatus) -> str | None:
        """How the bot's probes and Cloudflare disagree about a region, if they do."""
        pool = rs.pool
        if pool is None or not pool.enabled or pool.healthy is None:
            return None
        name = rs.region.name
        if rs.state is PoolState.HEALTHY and pool.healthy is False:
            why = f" ({rs.cloudflare_reasons})" if rs.cloudflare_reasons else ""
            return (
                f"Cloudflare marks {name} unhealthy{why} but the bot's probes pass, so its traffic "
                f"goes elsewhere{self._detection(up=True)}"
            )
        if rs.state in (PoolState.DOWN, PoolState.DEGRADED) and pool.healthy is True:
            return (
                f"the bot's probes fail for {name} ({rs.summary}) but Cloudflare still marks it "
                f"healthy and sends it traffic{self._detection(up=False)}"
            )
        return None

    def _moved(self, faults_only: bool) -> dict[str, list[str]]:
        """Geo regions not on their preferred pool, by the region now serving them.

        With ``faults_only``, those moved because their pool was drained (disabled) are left out.
        """
        view = self.cloudflare.view if self.cloudflare else None
        moved: dict[str, list[str]] = {}
        for geo, route in self.routes.items():
            if not (route.failed_over or not route.healthy):
                continue
            preferred = view.pools.get(route.preferred or "") if view else None
            if faults_only and route.healthy and preferred is not None and not preferred.enabled:
                continue
            moved.setdefault(self.region_of_pool(route.pool_id), []).append(geo)
        return moved

    @property
    def gray_failures(self) -> list[str]:
        return [g for r in self.regions if (g := self.gray_failure(r))]

    @property
    def user_problems(self) -> list[str]:
        problems = []
        for check in self.public:
            if check.error:
                problems.append(f"{check.where}: {check.error}")
            elif not check.ok:
                problems.append(f"users at {check.where} get HTTP {check.status}")
        return problems

    @property
    def healthy(self) -> bool:
        # A drained (disabled) region is a decision, not a fault.
        ok = (PoolState.HEALTHY, PoolState.DISABLED)
        regions_ok = all(r.state in ok for r in self.regions) and not self._moved(faults_only=True)
        return regions_ok and not self.gray_failures and not self.user_problems

    @property
    def verdict(self) -> str:
        """One line on top: gray failures first, then regions, then what users get."""
        parts = [f"gray failure: {g}" for g in self.gray_failures]
        parts += [
            f"{r.region.name} {r.state}: {r.summary}"
            for r in self.regions
            if r.state not in (PoolState.HEALTHY, PoolState.DISABLED) and not self.gray_failure(r)
        ]
        parts += self.user_problems
        moved = self._moved(faults_only=False)
        drained = [r.region.name for r in self.regions if r.state is PoolState.DISABLED]
        stranded = any(not self.routes[g].healthy for geos in moved.values() for g in geos)
        if not parts and not stranded and drained:
            where = "; ".join(f"{' '.join(g)} served by {to}" for to, g in moved.items())
            return f"healthy; {', '.join(drained)} drained" + (f" ({where})" if where else "")
        for to, geos in moved.items():
            fallback = not all(self.routes[g].healthy for g in geos)
            verb = "falls back" if fallback else "failed over"
            parts.append(f"traffic of {' '.join(geos)} {verb} to {to}")
        if parts:
            return "; ".join(parts)
        return "all healthy" if len(self.regions) > 1 else f"{self.regions[0].region.name} healthy"


class StatusService:
    """Probes, Cloudflare and the public hostname, all at once, cut off at the deadline."""

    def __init__(
        self,
        fleet: Fleet,
        prober: Prober,
        loadbalancer: LoadBalancer | None = None,
        userview: UserView | None = None,
    ) -> None:
        self.fleet = fleet
        self.prober = prober
        self.loadbalancer = loadbalancer
        self.userview = userview

    async def _cloudflare(self) -> CloudflareRead:
        assert self.loadbalancer is not None
        try:
            return CloudflareRead(
                await self.loadbalancer.live_view(self.fleet.load_balancer.hostname)
            )
        except ProviderError as exc:
            return CloudflareRead(None, str(exc))

    async def check(self, regions: list[str] | None = None) -> FleetStatus:
        chosen = [self.fleet.regions[n] for n in (regions or list(self.fleet.regions))]
        started = time.perf_counter()
        budget = max(0.1, self.fleet.status.deadline - RENDER_MARGIN)
        probes = asyncio.create_task(
            self.prober.probe_all(((r.name, o) for r in chosen for o in r.origins), budget=budget)
        )
        cloudflare = asyncio.create_task(self._cloudflare()) if self.loadbalancer else None
        public = asyncio.create_task(self.userview.check(budget)) if self.userview else None
        waiting = [t for t in (cloudflare, public) if t is not None]
        if waiting:
            # The user view bounds its own requests by the budget; a little grace lets it report.
            await asyncio.wait(waiting, timeout=budget + 0.1)
        results = await probes  # bounded by the same budget
        cf_read: CloudflareRead | None = None
        if cloudflare is not None:
            if cloudflare.done():
                cf_read = cloudflare.result()
            else:
                cloudflare.cancel()
                cf_read = CloudflareRead(None, f"Cloudflare gave no answer within {budget:g} s")
        checks: list[PublicCheck] = []
        if public is not None and self.userview is not None:
            if public.done():
                checks = public.result()
            else:
                public.cancel()
                checks = self.userview.missing(f"no answer within {budget:g} s")
        by_region: dict[str, list[ProbeResult]] = {r.name: [] for r in chosen}
        for result in results:
            by_region[result.region].append(result)
        view = cf_read.view if cf_read else None
        statuses = []
        for r in chosen:
            pool = view.pool_by_name(r.pool) if view else None
            state = pool_state(by_region[r.name])
            if pool is not None and not pool.enabled:
                state = PoolState.DISABLED
            statuses.append(RegionStatus(r, state, by_region[r.name], pool))
        return FleetStatus(
            fleet=self.fleet,
            regions=statuses,
            checked_at=datetime.now(UTC),
            elapsed=time.perf_counter() - started,
            cloudflare=cf_read,
            public=checks,
        )
