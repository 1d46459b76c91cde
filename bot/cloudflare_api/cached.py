"""One live view of the load balancer, shared by everyone who reads it.

The watch, ``/failover status`` and ``check``, the drains' and drills' drivers and the workflow
all ask for ``live_view``; each ask used to cost three API calls (the load balancer, the pools,
the monitor), and Cloudflare allows 1,200 per 5 minutes for every client of the account
together. Here:

- askers at the same moment share one request (single flight);
- the pools (health, enabled) are reused for ``ttl`` seconds (failover.toml's
  ``[watch] cloudflare_cache``), the load balancer's settings and the monitor, which only change
  when someone edits them, for ``CONFIG_TTL``;
- a change the bot makes (a pool or an origin enabled or disabled) drops the pools it had read,
  so the next read shows the change;
- when Cloudflare's API budget is low, or Cloudflare blocks calls, a view is answered from what
  was read last (up to ``MAX_STALE`` old) with ``LiveView.stale`` saying why and
  ``LiveView.read_at`` when it was read; a wait of a second or less is waited instead.

The other calls of the port go straight through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Generic, TypeVar

from bot.cloudflare_api.budget import BudgetExhausted
from bot.errors import ProviderRateLimited
from bot.lbmodel import (
    HealthEvent,
    LiveView,
    LoadBalancerInfo,
    MonitorInfo,
    PoolHealth,
    PoolInfo,
)
from bot.ports import LoadBalancer

T = TypeVar("T")
C = TypeVar("C")
# The load balancer's settings and its monitor: edited by people, rarely; re-read this often.
CONFIG_TTL = 30.0
# Cloudflare's block lasts 5 minutes: a view that old may still be shown, saying how old.
MAX_STALE = 300.0
# A budget that comes back within this is waited for rather than answered from the cache.
WAIT_BRIEFLY = 1.0


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Read(Generic[T]):
    value: T
    at: float  # monotonic, when Cloudflare was asked
    wall: datetime  # the same moment, UTC
    stale: str | None = None


class _Shared(Generic[T]):
    """One thing read from Cloudflare: reused ``ttl`` seconds, fetched once for all askers."""

    def __init__(
        self,
        ttl: float,
        fetch: Callable[[], Awaitable[T]],
        clock: Callable[[], float],
        wall: Callable[[], datetime],
    ) -> None:
        self.ttl = ttl
        self.fetch = fetch
        self.clock = clock
        self.wall = wall
        self.read: _Read[T] | None = None
        self.flight: asyncio.Task[_Read[T]] | None = None
        self.flight_at = 0.0  # when the read in flight began
        self.generation = 0  # bumped by a change: reads begun before it are not kept

    def invalidate(self) -> None:
        self.generation += 1
        self.read = None
        self.flight = None  # askers from now on do not join a read begun before the change

    async def _fetch(self, generation: int, at: float) -> _Read[T]:
        wall = self.wall()
        value = await self.fetch()
        read = _Read(value, at, wall)
        if generation == self.generation and (self.read is None or self.read.at <= at):
            self.read = read
        return read

    async def _shared(self, max_age: float | None) -> _Read[T]:
        limit = self.ttl if max_age is None else max_age
        now = self.clock()
        read = self.read
        if read is not None and now - read.at < limit:
            return read
        flight = self.flight
        if flight is None or flight.done() or now - self.flight_at > limit:
            # A read begun too long ago for this asker (one that wants a fresh view) is not
            # joined; the new one is what later askers join.
            flight = self.flight = asyncio.create_task(self._fetch(self.generation, now))
            self.flight_at = now
            flight.add_done_callback(_retrieve)
        # One asker giving up (a status deadline) must not cancel the others' read.
        return await asyncio.shield(flight)

    async def get(self, max_age: float | None = None, stale_ok: bool = True) -> _Read[T]:
        """The value read at most ``max_age`` s ago (default: the TTL), shared with whoever
        asks meanwhile; when the budget refuses the read, what was read last, marked stale."""
        try:
            return await self._shared(max_age)
        except BudgetExhausted as exc:
            if 0 < exc.retry_in <= WAIT_BRIEFLY:
                await asyncio.sleep(exc.retry_in)
                try:
                    return await self._shared(max_age)
                except BudgetExhausted as again:
                    exc = again
            read = self.read
            if not stale_ok or read is None or self.clock() - read.at > MAX_STALE:
                raise
            return replace(read, stale=f"{exc.reason}: answered from the cache")

    def close(self) -> None:
        if self.flight is not None and not self.flight.done():
            self.flight.cancel()


def _retrieve(task: asyncio.Task[object]) -> None:
    """A read whose askers all gave up: its error is theirs, not an unhandled one."""
    if not task.cancelled():
        task.exception()


class CachedLoadBalancer:
    """The LoadBalancer port with one shared, short-lived view (see the module)."""

    def __init__(
        self,
        inner: LoadBalancer,
        ttl: float,
        config_ttl: float = CONFIG_TTL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _wall,
    ) -> None:
        self.inner = inner
        self.ttl = ttl
        self.config_ttl = max(ttl, config_ttl)
        self.clock = clock
        self.wall = wall
        self._pools: _Shared[list[PoolInfo]] = _Shared(ttl, inner.pools, clock, wall)
        self._lbs: dict[str, _Shared[LoadBalancerInfo]] = {}
        self._monitors: dict[str, _Shared[MonitorInfo]] = {}

    def _config(
        self, parts: dict[str, _Shared[C]], key: str, fetch: Callable[[], Awaitable[C]]
    ) -> _Shared[C]:
        part = parts.get(key)
        if part is None:
            part = parts[key] = _Shared(self.config_ttl, fetch, self.clock, self.wall)
        return part

    def invalidate(self) -> None:
        """Forget the pools read so far: the next read asks Cloudflare."""
        self._pools.invalidate()

    # ------------------------------------------------------------------ the shared view

    async def live_view(self, hostname: str, max_age: float | None = None) -> LiveView:
        """The load balancer, its pools and the monitor of its first pool (as the adapter's),
        each from the cache while it is fresh (``max_age``: at most this old, whatever the
        TTLs; 0 for a read begun now); the load balancer and the pools asked at once."""
        lb_part = self._config(self._lbs, hostname, lambda: self.inner.load_balancer(hostname))
        lb_read, pools_read = await asyncio.gather(lb_part.get(max_age), self._pools.get(max_age))
        lb = lb_read.value
        pools = {p.id: p for p in pools_read.value}
        monitor_ids = [m for p in lb.default_pools if p in pools and (m := pools[p].monitor_id)]
        monitor: MonitorInfo | None = None
        stale = [r.stale for r in (lb_read, pools_read) if r.stale]
        if monitor_ids:
            monitor_id = monitor_ids[0]
            part = self._config(self._monitors, monitor_id, lambda: self.inner.monitor(monitor_id))
            monitor_read = await part.get(max_age)
            monitor = monitor_read.value
            if monitor_read.stale:
                stale.append(monitor_read.stale)
        return LiveView(
            lb, pools, monitor, read_at=pools_read.wall, stale=stale[0] if stale else None
        )

    def fresh(self) -> LoadBalancer:
        """The same load balancer, whose ``live_view`` is read now (and then shared): for the
        decisions that change traffic (a drain's or a drill's safety rules), made on what
        Cloudflare says now rather than up to a TTL ago. They are rare; status and the
        drivers keep sharing."""
        return FreshReads(self)

    async def pools(self) -> list[PoolInfo]:
        return list((await self._pools.get(stale_ok=False)).value)

    # ------------------------------------------------------------------ straight through

    async def pool(self, pool_id: str) -> PoolInfo:
        return await self.inner.pool(pool_id)

    async def pool_health(self, pool_id: str) -> PoolHealth:
        return await self.inner.pool_health(pool_id)

    async def load_balancer(self, hostname: str) -> LoadBalancerInfo:
        return await self.inner.load_balancer(hostname)

    async def monitor(self, monitor_id: str) -> MonitorInfo:
        return await self.inner.monitor(monitor_id)

    async def monitors(self) -> list[MonitorInfo]:
        return await self.inner.monitors()

    async def health_events(
        self, since: datetime | None = None, pool_id: str | None = None
    ) -> list[HealthEvent]:
        return await self.inner.health_events(since=since, pool_id=pool_id)

    # ------------------------------------------------------------------ changes

    async def set_pool_enabled(self, pool_id: str, enabled: bool) -> PoolInfo:
        return await self._changing(lambda: self.inner.set_pool_enabled(pool_id, enabled))

    async def set_origin_enabled(self, pool_id: str, origin: str, enabled: bool) -> PoolInfo:
        return await self._changing(lambda: self.inner.set_origin_enabled(pool_id, origin, enabled))

    async def _changing(self, change: Callable[[], Awaitable[PoolInfo]]) -> PoolInfo:
        """Make a change; what was read before it is forgotten, unless it surely did not land
        (refused for the rate limit: not sent, or answered 429)."""
        try:
            changed = await change()
        except ProviderRateLimited:
            raise
        except BaseException:
            self.invalidate()  # a failed call may have landed all the same (a timeout)
            raise
        self.invalidate()
        return changed

    async def aclose(self) -> None:
        self._pools.close()
        for lb in self._lbs.values():
            lb.close()
        for monitor in self._monitors.values():
            monitor.close()
        await self.inner.aclose()


class FreshReads(CachedLoadBalancer):
    """A CachedLoadBalancer whose live view is read at the moment it is asked for (see
    ``CachedLoadBalancer.fresh``); everything else, the caches and changes included, is the
    cache's own (the same objects, not copies)."""

    def __init__(self, cached: CachedLoadBalancer) -> None:
        self.inner, self.ttl, self.config_ttl = cached.inner, cached.ttl, cached.config_ttl
        self.clock, self.wall = cached.clock, cached.wall
        self._pools, self._lbs, self._monitors = cached._pools, cached._lbs, cached._monitors

    async def live_view(self, hostname: str, max_age: float | None = None) -> LiveView:
        return await super().live_view(hostname, max_age=0.0)

    async def aclose(self) -> None:
        """The cache's owner closes it."""
