"""The routing table: which pool serves each Cloudflare geo region, and what its users get (pure).

The rules as Cloudflare documents them (developers.cloudflare.com):
- geo steering (load-balancing/understand-basics/traffic-steering/steering-policies/geo-steering,
  "Failover behavior"): a geo region WITH a ``region_pools`` entry is served by the first healthy
  enabled pool of that list, and when none is, by the fallback pool; ``default_pools`` serve only
  the geo regions WITHOUT an entry (first healthy enabled, then the fallback). So a geo region that
  lists one pool has no failover but the fallback. ``pop_pools``, ``country_pools`` and custom
  rules take precedence: the table does not model them and ``routing_notes`` says so;
- off (…/steering-policies/standard-options): ``default_pools`` in order, then the fallback. The
  API's ``""`` is geo when region, country or PoP pools are set, otherwise off;
- health (load-balancing/understand-basics/health-details): a pool is healthy while at least
  ``minimum_origins`` of its endpoints are; disabled pools get no traffic and no checks; health
  that is still unknown (a pool or origin just re-enabled) counts as unhealthy; without a monitor
  a pool is never marked unhealthy;
- the fallback pool takes the traffic whatever its health: users get what its origins answer;
  a disabled fallback that would be chosen gives users Cloudflare's 530 (error 1016).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from bot.fleet import GEO_REGIONS
from bot.lbmodel import LoadBalancerInfo, PoolInfo

# Policies the table computes exactly; the others are shown in failover order (routing_notes).
EXACT_POLICIES = ("geo", "off")


class Via(StrEnum):
    REGION_POOLS = "region pools"
    DEFAULT_POOLS = "default pools"
    FALLBACK = "fallback"  # no healthy pool in the geo region's list: Cloudflare's last resort


class Users(StrEnum):
    """What a user in the geo region gets from the public hostname."""

    SERVED = "served"  # a healthy enabled pool answers
    ORIGIN_ERRORS = "origin errors"  # the fallback is unhealthy: what its origins answer
    ERROR_1016 = "530 (error 1016)"  # the fallback is disabled or missing


def healthy_enough(origins: Iterable[bool | None], minimum_origins: int) -> bool:
    """Cloudflare's rule for a pool: healthy while at least ``minimum_origins`` of its (enabled)
    origins are healthy; unknown counts as not."""
    return sum(1 for healthy in origins if healthy) >= minimum_origins


def pool_serving(pool: PoolInfo | None) -> bool:
    """Whether Cloudflare's steering would choose the pool: enabled and healthy.

    Health ``None`` is "not reported": without a monitor Cloudflare never marks a pool unhealthy
    (it serves); with a monitor it means not checked yet (just re-enabled), which is unhealthy.
    """
    if pool is None or not pool.enabled:
        return False
    if pool.healthy is None:
        return pool.monitor_id is None
    return pool.healthy


def effective_policy(lb: LoadBalancerInfo) -> str:
    policy = lb.steering_policy or ""
    if policy == "":
        mapped = lb.region_pools or lb.country_pools or lb.pop_pools
        return "geo" if mapped else "off"
    return policy


def chain(geo: str, lb: LoadBalancerInfo) -> tuple[Via, tuple[str, ...]]:
    """Which list serves ``geo``, and its pools in the order tried before the fallback."""
    if effective_policy(lb) == "geo" and lb.region_pools.get(geo):
        return Via.REGION_POOLS, lb.region_pools[geo]
    return Via.DEFAULT_POOLS, lb.default_pools


@dataclass(frozen=True)
class Route:
    geo: str
    pool_id: str | None  # None only when the load balancer names no fallback pool
    via: Via
    preferred: str | None  # the pool this geo region is steered to when all is well
    users: Users

    @property
    def failed_over(self) -> bool:
        """Served by another pool than its preferred one."""
        return self.pool_id != self.preferred

    @property
    def healthy(self) -> bool:
        """Its users are served by a healthy pool (which may be a healthy fallback)."""
        return self.users is Users.SERVED

    @property
    def away(self) -> bool:
        """Not where it is when all is well: failed over, or left on the fallback."""
        return self.failed_over or self.via is Via.FALLBACK


def route(geo: str, lb: LoadBalancerInfo, pools: Mapping[str, PoolInfo]) -> Route:
    via, candidates = chain(geo, lb)
    preferred = candidates[0] if candidates else lb.fallback_pool
    for pool_id in candidates:
        if pool_serving(pools.get(pool_id)):
            return Route(geo, pool_id, via, preferred, Users.SERVED)
    fallback = pools.get(lb.fallback_pool or "")
    if fallback is None or not fallback.enabled:
        users = Users.ERROR_1016
    elif pool_serving(fallback):
        users = Users.SERVED
    else:
        users = Users.ORIGIN_ERRORS
    return Route(geo, lb.fallback_pool, Via.FALLBACK, preferred, users)


def routing_table(lb: LoadBalancerInfo, pools: Mapping[str, PoolInfo]) -> dict[str, Route]:
    """The pool serving each of the 13 geo regions, in Cloudflare's order."""
    return {geo: route(geo, lb, pools) for geo in GEO_REGIONS}


def stranded_users(users: Users, fallback: str, probes_fail: bool | None = None) -> str:
    """What the users of a geo region with no healthy pool get, in one clause.

    ``probes_fail`` is the bot's own probes of the fallback, when known: Cloudflare says only
    that users get what the fallback's origins answer.
    """
    if users is Users.ERROR_1016:
        return f"the fallback {fallback} is disabled, so users get Cloudflare's 530 (error 1016)"
    if probes_fail:
        return (
            f"Cloudflare sends them to the fallback {fallback}, which is unhealthy, so users get "
            "errors"
        )
    return (
        f"Cloudflare sends them to the fallback {fallback}, which it marks unhealthy, so users get "
        "what its origins answer"
    )


def routing_notes(lb: LoadBalancerInfo) -> list[str]:
    """Where the table is not what Cloudflare will do: said, never silently ignored."""
    notes = []
    if not lb.enabled:
        notes.append(
            f"the load balancer is disabled: {lb.name} does not load-balance (only its DNS "
            "records answer, if any); the table shows what it would do once enabled"
        )
    policy = effective_policy(lb)
    if policy not in EXACT_POLICIES:
        notes.append(
            f"steering policy {policy}: the table is a failover-order approximation (default "
            "pools in order, then the fallback)"
        )
    elif policy == "geo":
        if lb.pop_pools:
            notes.append(
                f"pop_pools for {' '.join(sorted(lb.pop_pools))}: users of those data centers are "
                "steered by them first; the table does not model them"
            )
        if lb.country_pools:
            notes.append(
                f"country_pools for {' '.join(sorted(lb.country_pools))}: users in those "
                "countries are steered by them, not by region_pools; the table does not model them"
            )
    if lb.rules:
        notes.append(
            f"{lb.rules} custom rule{'s' if lb.rules != 1 else ''}: a rule may override steering "
            "or answer by itself; the table does not model them"
        )
    return notes
