"""The load balancer as the domain sees it: pools, origins, steering, monitor, health events.

Pool and origin health comes from the provider (Cloudflare's monitor): ``None`` means the provider
reported none: never checked without a monitor (healthy), not checked yet with one (unhealthy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class OriginInfo:
    name: str
    address: str
    enabled: bool = True
    weight: float = 1.0
    healthy: bool | None = None
    failure_reason: str | None = None


@dataclass(frozen=True)
class PoolInfo:
    id: str
    name: str
    enabled: bool = True
    minimum_origins: int = 1
    origins: tuple[OriginInfo, ...] = ()
    healthy: bool | None = None
    monitor_id: str | None = None
    description: str = ""

    def origin(self, name: str) -> OriginInfo | None:
        return next((o for o in self.origins if o.name == name), None)


@dataclass(frozen=True)
class LoadBalancerInfo:
    id: str
    name: str  # the hostname it answers for
    enabled: bool = True
    proxied: bool = True
    steering_policy: str = "off"
    session_affinity: str = "none"
    default_pools: tuple[str, ...] = ()  # pool ids, in order
    fallback_pool: str | None = None
    region_pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ttl: int | None = None
    # Overrides that take precedence over region_pools (the routing table does not model them).
    country_pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pop_pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rules: int = 0  # custom load-balancing rules that are not disabled

    @property
    def pools_used(self) -> tuple[str, ...]:
        """Every pool id the load balancer can send traffic to, default pools first."""
        listed = [*self.default_pools]
        for mapping in (self.region_pools, self.country_pools, self.pop_pools):
            for ids in mapping.values():
                listed += ids
        if self.fallback_pool:
            listed.append(self.fallback_pool)
        return tuple(dict.fromkeys(listed))


@dataclass(frozen=True)
class MonitorInfo:
    id: str
    type: str = "http"
    method: str = "GET"
    path: str = "/"
    interval: float = 60
    timeout: float = 5
    retries: int = 2
    expected_codes: str = "200"
    expected_body: str = ""
    consecutive_down: int = 0
    consecutive_up: int = 0
    follow_redirects: bool = False
    header: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class OriginCheck:
    """One origin's last check from one Cloudflare location."""

    address: str
    healthy: bool
    failure_reason: str = ""
    response_code: int | None = None
    rtt: str | None = None


@dataclass(frozen=True)
class PoolHealth:
    pool_id: str
    by_location: dict[str, tuple[bool, tuple[OriginCheck, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class OriginChange:
    name: str
    address: str
    healthy: bool | None
    changed: bool
    failure_reason: str = ""


@dataclass(frozen=True)
class HealthEvent:
    """A change of pool or origin health as Cloudflare recorded it, at Cloudflare's time."""

    id: int
    at: datetime
    pool_id: str
    pool_name: str
    pool_healthy: bool | None
    pool_changed: bool
    origins: tuple[OriginChange, ...] = ()


@dataclass(frozen=True)
class LiveView:
    """One consistent read of the load balancer and its pools.

    Views are shared and reused for a few seconds (bot.cloudflare_api.cached): ``read_at`` says
    when Cloudflare was asked for the pools (their health and whether they are enabled; the load
    balancer's settings and the monitor are re-read less often), ``stale`` why the view is older
    than the cache keeps views (Cloudflare's API budget), to be shown beside it.
    """

    load_balancer: LoadBalancerInfo
    pools: dict[str, PoolInfo]  # by id
    monitor: MonitorInfo | None = None
    read_at: datetime | None = None  # None: not known (a view not read through the cache)
    stale: str | None = None  # why it is answered from the cache past its reuse; None: it is not

    def age(self, now: datetime) -> float | None:
        """Seconds since Cloudflare was asked; None when not known."""
        if self.read_at is None:
            return None
        return max(0.0, (now - self.read_at).total_seconds())

    def staleness(self, now: datetime) -> str | None:
        """What to say beside a view answered from the cache past its reuse (None: it is not)."""
        if self.stale is None:
            return None
        age = self.age(now)
        return self.stale if age is None else f"{self.stale}, {age:.0f} s old"

    def pool_by_name(self, name: str) -> PoolInfo | None:
        return next((p for p in self.pools.values() if p.name == name), None)
