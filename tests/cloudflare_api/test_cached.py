"""The shared live view over the real adapter and the Cloudflare stand-in, counted at the
stand-in: one request for concurrent askers, reuse for the TTL, a change seen at once, and a
low or blocked API budget answered from the cache (saying how old) while restores go first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.cloudflare_api.budget import BudgetExhausted
from bot.cloudflare_api.cached import CachedLoadBalancer
from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.cloudflare_api.retry import retry_restore
from bot.errors import ProviderUnavailable
from bot.sandbox.world import Sandbox

HOST = "api.erlvinc.com"
T0 = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
EU = "foundation-eu-west"


@dataclass
class Cached:
    lb: CachedLoadBalancer
    adapter: CloudflareLoadBalancer
    world: Sandbox
    now: list[float]

    def advance(self, seconds: float) -> None:
        self.now[0] += seconds

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.world.cloudflare.requests

    def since(self, mark: int) -> list[str]:
        """The requests the stand-in saw after ``mark``, as "GET pools" and the like."""
        return [f"{m} {p.rsplit('/', 1)[-1]}" for m, p in self.requests[mark:]]


@pytest.fixture
async def cached(world: Sandbox) -> AsyncIterator[Cached]:
    cf = world.cloudflare
    adapter = CloudflareLoadBalancer(
        cf.token, cf.account_id, cf.zone_id, base_url=cf.base_url, timeout=1.0
    )
    now = [1000.0]
    lb = CachedLoadBalancer(
        adapter,
        ttl=2.0,
        clock=lambda: now[0],
        wall=lambda: T0 + timedelta(seconds=now[0] - 1000.0),
    )
    yield Cached(lb, adapter, world, now)
    await lb.aclose()


async def limit(world: Sandbox, **body: float) -> None:
    async with httpx.AsyncClient() as http:
        url = f"{world.cloudflare.server.url}/_sandbox/ratelimit"
        (await http.post(url, json=body)).raise_for_status()


async def test_concurrent_askers_share_one_read(cached: Cached) -> None:
    mark = len(cached.requests)
    views = await asyncio.gather(*(cached.lb.live_view(HOST) for _ in range(20)))
    # The load balancer, the pools and the monitor: three requests for twenty askers.
    assert sorted(cached.since(mark)) == [
        f"GET {cached.world.cloudflare.monitor_id}",
        "GET load_balancers",
        "GET pools",
    ]
    assert all(v is views[0] or v == views[0] for v in views)
    assert views[0].read_at == T0 and views[0].stale is None
    assert views[0].pool_by_name(EU) is not None and views[0].monitor is not None


async def test_a_read_is_reused_for_the_ttl_then_only_the_pools_are_read_again(
    cached: Cached,
) -> None:
    first = await cached.lb.live_view(HOST)
    mark = len(cached.requests)
    cached.advance(1.9)
    assert await cached.lb.live_view(HOST) == first  # within the TTL: no request
    assert cached.since(mark) == []
    cached.advance(0.1)
    again = await cached.lb.live_view(HOST)
    # The pools (health, enabled) every TTL; the load balancer's settings and the monitor less.
    assert cached.since(mark) == ["GET pools"]
    assert again.read_at == T0 + timedelta(seconds=2.0) and again.age(T0 + timedelta(seconds=3))
    assert again.age(T0 + timedelta(seconds=3)) == 1.0
    cached.advance(30)
    await cached.lb.live_view(HOST)
    assert len(cached.since(mark)) == 4  # pools; then pools, load balancer and monitor


async def test_a_change_the_bot_makes_is_seen_by_the_next_read(cached: Cached) -> None:
    view = await cached.lb.live_view(HOST)
    eu = view.pool_by_name(EU)
    assert eu is not None and eu.enabled
    mark = len(cached.requests)
    await cached.lb.set_pool_enabled(eu.id, False)
    changed = await cached.lb.live_view(HOST)  # within the TTL, yet read again
    assert cached.since(mark) == [f"PATCH {eu.id}", "GET pools"]
    disabled = changed.pool_by_name(EU)
    assert disabled is not None and not disabled.enabled


async def test_a_read_in_flight_during_a_change_is_not_kept(cached: Cached) -> None:
    await cached.lb.live_view(HOST)
    cached.advance(5)
    async with httpx.AsyncClient() as http:
        await http.post(
            f"{cached.world.cloudflare.server.url}/_sandbox/faults",
            json={"kind": "slow", "delay": 0.3, "times": 1, "method": "GET"},
        )
    before = asyncio.create_task(cached.lb.live_view(HOST))  # reads the pools, slowly
    await asyncio.sleep(0.05)
    eu = next(p for p in await cached.adapter.pools() if p.name == EU)
    await cached.lb.set_pool_enabled(eu.id, False)
    mark = len(cached.requests)
    after = await cached.lb.live_view(HOST)  # does not join the read begun before the change
    assert cached.since(mark) == ["GET pools"]
    assert not after.pool_by_name(EU).enabled  # type: ignore[union-attr]
    await before
    mark = len(cached.requests)
    assert await cached.lb.live_view(HOST) == after  # what it read was not kept over this
    assert cached.since(mark) == []


async def test_an_asker_giving_up_does_not_cancel_the_others(cached: Cached) -> None:
    async with httpx.AsyncClient() as http:
        await http.post(
            f"{cached.world.cloudflare.server.url}/_sandbox/faults",
            json={"kind": "slow", "delay": 0.3, "times": 1, "method": "GET"},
        )
    impatient = asyncio.create_task(cached.lb.live_view(HOST))
    patient = asyncio.create_task(cached.lb.live_view(HOST))
    await asyncio.sleep(0.1)
    impatient.cancel()  # a status deadline passed
    view = await patient
    assert view.pool_by_name(EU) is not None
    assert impatient.cancelled()


async def test_the_rate_limit_headers_are_read(cached: Cached) -> None:
    await limit(cached.world, limit=50, window=60)
    await cached.lb.live_view(HOST)
    budget = cached.adapter.budget
    assert (budget.quota, budget.window, budget.left()) == (50, 60.0, 47)
    assert 58 <= budget.resets_in() <= 60


async def test_a_low_budget_is_answered_from_the_cache_saying_how_old(cached: Cached) -> None:
    await limit(cached.world, limit=10, window=60)  # a reserve of 1 call
    view = await cached.lb.live_view(HOST)  # 3 calls: 7 left
    for _ in range(6):
        await cached.adapter.monitors()  # someone else's calls: 1 left
    cached.advance(5)
    mark = len(cached.requests)
    old = await cached.lb.live_view(HOST)
    assert cached.since(mark) == []  # not asked: what is left is kept for restores
    assert old.pools == view.pools and old.read_at == T0
    assert old.age(T0 + timedelta(seconds=5)) == 5.0
    assert old.stale is not None and old.stale.startswith(
        "Cloudflare's API budget is nearly spent (1 of 10 calls left for "
    )
    assert old.stale.endswith("s): answered from the cache")
    # A restore still goes.
    eu = view.pool_by_name(EU)
    assert eu is not None
    assert (await cached.lb.set_pool_enabled(eu.id, True)).enabled
    assert cached.since(mark) == [f"PATCH {eu.id}"]
    # Without a view to answer from, the read says why it did not happen.
    with pytest.raises(BudgetExhausted, match="kept for restores; reading the pools did not"):
        await cached.lb.live_view(HOST)


async def test_blocked_reads_answer_from_the_cache_and_the_restore_goes_first(
    cached: Cached,
) -> None:
    await limit(cached.world, limit=4, window=60, block=1.5)
    view = await cached.lb.live_view(HOST)  # 3 calls: 1 left, the reserve
    eu = view.pool_by_name(EU)
    assert eu is not None
    await cached.adapter.set_pool_enabled(eu.id, True)  # a restore spends the last call
    with pytest.raises(BudgetExhausted) as caught:
        await cached.adapter.set_pool_enabled(eu.id, True)  # over: 429, blocked 1.5 s
    assert caught.value.retry_in > 1.0
    mark = len(cached.requests)
    cached.advance(5)
    restore = asyncio.create_task(retry_restore(lambda: cached.lb.set_pool_enabled(eu.id, True)))
    views = []
    while not restore.done():
        views.append(await cached.lb.live_view(HOST))  # answered from the cache meanwhile
        await asyncio.sleep(0.1)
    assert (await restore).enabled
    assert cached.since(mark) == [f"PATCH {eu.id}"]  # the first call once the block lifted
    assert views and all(v.stale and v.read_at == T0 for v in views)
    assert "Cloudflare blocks the bot's API calls for 2 s more" in str(views[0].stale)


async def test_a_restore_is_not_held_by_the_read_breaker(cached: Cached) -> None:
    eu = next(p for p in await cached.adapter.pools() if p.name == EU)
    await cached.adapter.set_pool_enabled(eu.id, False)
    for _ in range(5):
        cached.adapter.breaker.failure()  # five failed reads in a row: the breaker is open
    with pytest.raises(ProviderUnavailable, match="not calling it for a while"):
        await cached.adapter.pools()
    with pytest.raises(ProviderUnavailable, match="not calling it for a while"):
        await cached.adapter.set_pool_enabled(eu.id, False)  # nor a change that takes one out
    restored = await cached.adapter.set_pool_enabled(eu.id, True)
    assert restored.enabled
    assert cached.adapter.breaker.allow()  # Cloudflare answered: reads go again


async def test_a_restore_is_sent_once_its_retries_are_the_callers(cached: Cached) -> None:
    eu = next(p for p in await cached.adapter.pools() if p.name == EU)
    async with httpx.AsyncClient() as http:
        await http.post(
            f"{cached.world.cloudflare.server.url}/_sandbox/faults",
            json={"kind": "500", "times": 1, "method": "PATCH"},
        )
    mark = len(cached.requests)
    with pytest.raises(
        ProviderUnavailable, match=rf"^Cloudflare failed \(HTTP 500\) while enabling pool {eu.id}$"
    ):
        await cached.adapter.set_pool_enabled(eu.id, True)
    assert cached.since(mark) == [f"PATCH {eu.id}"]  # no SDK retries: the policy's are
