"""The load balancer as failover.toml plans it, in the domain's terms (pure).

Used where Cloudflare's live view is missing or hypothetical: ``/failover whatif`` without
Cloudflare, the watch's routing when Cloudflare is not configured, and the tests. Pool ids are the
pool names; the monitor is the plan's.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.fleet import Fleet
from bot.lbmodel import LiveView, LoadBalancerInfo, MonitorInfo, OriginInfo, PoolInfo

PLAN_MONITOR = "plan"


def planned_view(
    fleet: Fleet,
    healthy: Mapping[str, bool | None] | None = None,
    enabled: Mapping[str, bool] | None = None,
) -> LiveView:
    """Pools by region health (default healthy) and enabled flag (default enabled)."""
    pools = {
        r.pool: PoolInfo(
            id=r.pool,
            name=r.pool,
            healthy=(healthy or {}).get(r.name, True),
            enabled=(enabled or {}).get(r.name, True),
            minimum_origins=r.minimum_origins,
            origins=tuple(
                OriginInfo(name=o.name, address=o.url, weight=o.weight, enabled=o.enabled)
                for o in r.origins
            ),
            monitor_id=PLAN_MONITOR,
        )
        for r in fleet.regions.values()
    }
    lb = fleet.load_balancer
    pool_of = {r.name: r.pool for r in fleet.regions.values()}
    m = fleet.monitor
    return LiveView(
        LoadBalancerInfo(
            id="plan",
            name=lb.hostname,
            steering_policy=lb.steering_policy,
            session_affinity=lb.session_affinity,
            default_pools=tuple(pool_of[n] for n in lb.default_pools),
            fallback_pool=pool_of[lb.fallback_pool],
            region_pools={g: tuple(pool_of[n] for n in ns) for g, ns in lb.region_pools.items()},
        ),
        pools,
        MonitorInfo(
            id=PLAN_MONITOR,
            method=m.method,
            path=m.path,
            interval=m.interval,
            timeout=m.timeout,
            retries=m.retries,
            expected_codes=m.expected_codes,
            expected_body=m.expected_body,
            consecutive_down=m.consecutive_down,
            consecutive_up=m.consecutive_up,
        ),
    )
