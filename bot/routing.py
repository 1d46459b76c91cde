"""The routing table: which pool serves each Cloudflare geo region (pure).

Cloudflare's rules, which the sandbox's data plane follows too: disabled pools get no traffic; a
geo region is served by the first healthy enabled pool of its ``region_pools``, else of
``default_pools``; when none is, traffic goes to the fallback pool whatever its health.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from bot.balancer import LoadBalancerInfo, PoolInfo
from bot.fleet import GEO_REGIONS


class Via(StrEnum):
    REGION_POOLS = "region pools"
    DEFAULT_POOLS = "default pools"
    FALLBACK = "fallback"  # no healthy pool left: Cloudflare reports it as "No Health"


@dataclass(frozen=True)
class Route:
    geo: str
    pool_id: str | None  # None only when the load balancer names no fallback pool
    via: Via
    preferred: str | None  # the pool this geo region is steered to when all is well

    @property
    def failed_over(self) -> bool:
        return self.pool_id != self.preferred

    @property
    def healthy(self) -> bool:
        return self.via is not Via.FALLBACK


def route(geo: str, lb: LoadBalancerInfo, pools: Mapping[str, PoolInfo]) -> Route:
    own = lb.region_pools.get(geo, ()) if lb.steering_policy == "geo" else ()
    preferred = next(iter(own), None) or next(iter(lb.default_pools), None)
    for via, candidates in ((Via.REGION_POOLS, own), (Via.DEFAULT_POOLS, lb.default_pools)):
        for pool_id in candidates:
            pool = pools.get(pool_id)
            if pool is not None and pool.serving:
                return Route(geo, pool_id, via, preferred)
    return Route(geo, lb.fallback_pool, Via.FALLBACK, preferred)


def routing_table(lb: LoadBalancerInfo, pools: Mapping[str, PoolInfo]) -> dict[str, Route]:
    """The pool serving each of the 13 geo regions, in Cloudflare's order."""
    return {geo: route(geo, lb, pools) for geo in GEO_REGIONS}
