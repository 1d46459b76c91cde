"""The Cloudflare adapter through the official SDK against the stand-in: state, health, faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.errors import (
    ProviderAuthError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
)
from bot.sandbox.world import Sandbox

from ..conftest import eventually

HOST = "api.erlvinc.com"


@pytest.fixture
async def lb(world: Sandbox) -> AsyncIterator[CloudflareLoadBalancer]:
    cf = world.cloudflare
    adapter = CloudflareLoadBalancer(
        cf.token, cf.account_id, cf.zone_id, base_url=cf.base_url, timeout=1.0
    )
    yield adapter
    await adapter.aclose()


async def fault(world: Sandbox, **body: object) -> None:
    async with httpx.AsyncClient() as http:
        (
            await http.post(f"{world.cloudflare.server.url}/_sandbox/faults", json=body)
        ).raise_for_status()


async def test_reads_the_live_view_with_health(lb: CloudflareLoadBalancer) -> None:
    view = await lb.live_view(HOST)
    names = {p.name for p in view.pools.values()}
    assert names == {"foundation-us-east", "foundation-eu-west", "foundation-apac-sg"}
    us = view.pool_by_name("foundation-us-east")
    assert us is not None and us.healthy is True and us.enabled
    assert us.origins[0].name == "gateway-us-east" and us.origins[0].healthy is True
    assert us.origins[0].failure_reason == "No failures"
    lb_info = view.load_balancer
    assert lb_info.steering_policy == "geo" and lb_info.session_affinity == "ip_cookie"
    assert lb_info.fallback_pool == us.id and lb_info.default_pools[0] == us.id
    eu = view.pool_by_name("foundation-eu-west")
    assert eu is not None and lb_info.region_pools["WEU"][0] == eu.id
    assert view.monitor is not None and view.monitor.path == "/health"
    assert view.monitor.expected_body == '"status":"healthy"'


async def test_pool_health_has_the_real_shape(lb: CloudflareLoadBalancer) -> None:
    pool = (await lb.pools())[1]
    health = await lb.pool_health(pool.id)
    assert health.pool_id == pool.id
    assert set(health.by_location) == {"Ashburn, US", "Frankfurt, DE", "Singapore, SG"}
    healthy, checks = health.by_location["Frankfurt, DE"]
    assert (
        healthy and checks[0].address == pool.origins[0].address and checks[0].response_code == 200
    )


async def test_a_broken_gateway_shows_in_health_and_events(
    lb: CloudflareLoadBalancer, world: Sandbox
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    await world.gateways["eu-west"].set_mode("degraded", check="kv")

    async def marked() -> bool:
        pool = next(p for p in await lb.pools() if p.name == "foundation-eu-west")
        return pool.healthy is False

    await eventually(marked, within=6)
    pool = next(p for p in await lb.pools() if p.name == "foundation-eu-west")
    assert pool.origins[0].failure_reason == "Response code mismatch error"
    events = await lb.health_events(since=since)
    [event] = [e for e in events if e.pool_name == "foundation-eu-west"]
    assert event.pool_healthy is False and event.pool_changed
    assert event.origins[0].changed and event.origins[0].healthy is False
    assert event.at >= since
    assert await lb.health_events(since=datetime.now(UTC) + timedelta(minutes=1)) == []


async def test_disable_and_enable_a_pool(lb: CloudflareLoadBalancer) -> None:
    pool = (await lb.pools())[2]
    changed = await lb.set_pool_enabled(pool.id, False)
    assert changed.enabled is False
    assert (await lb.pool(pool.id)).enabled is False  # the next GET sees it
    assert (await lb.set_pool_enabled(pool.id, True)).enabled is True


async def test_disable_one_origin_sends_only_writable_keys(
    lb: CloudflareLoadBalancer, world: Sandbox
) -> None:
    pool = (await lb.pools())[0]
    # The stand-in answers 400 to read-only origin keys (healthy, failure_reason), as Cloudflare.
    changed = await lb.set_origin_enabled(pool.id, "gateway-us-east", False)
    assert changed.origins[0].enabled is False
    [sent] = [e for e in world.cloudflare.exchanges if e.method == "PATCH"]
    assert b"healthy" not in sent.request_body and b"failure_reason" not in sent.request_body
    with pytest.raises(ProviderNotFound, match="has no origin nope"):
        await lb.set_origin_enabled(pool.id, "nope", False)


async def test_unknown_hostname(lb: CloudflareLoadBalancer) -> None:
    with pytest.raises(ProviderNotFound, match=r"has no load balancer for www\.example\.com"):
        await lb.load_balancer("www.example.com")


async def test_rate_limited_then_through_honours_retries(
    lb: CloudflareLoadBalancer, world: Sandbox
) -> None:
    await fault(world, kind="429", times=1, retry_after=0)
    before = len(world.cloudflare.requests)
    assert len(await lb.pools()) == 3
    assert len(world.cloudflare.requests) - before == 2  # one 429, one retry


async def test_rate_limited_throughout(lb: CloudflareLoadBalancer, world: Sandbox) -> None:
    await fault(world, kind="429", times=3, retry_after=0)
    with pytest.raises(ProviderRateLimited) as caught:
        await lb.pools()
    assert str(caught.value) == "Cloudflare rate-limited us while reading the pools; retried twice"


async def test_server_errors(lb: CloudflareLoadBalancer, world: Sandbox) -> None:
    await fault(world, kind="500", times=3)
    with pytest.raises(
        ProviderUnavailable,
        match=r"^Cloudflare failed \(HTTP 500\) while reading the pools; retried twice$",
    ):
        await lb.pools()


async def test_token_without_permission(lb: CloudflareLoadBalancer, world: Sandbox) -> None:
    pool = (await lb.pools())[0]
    await fault(world, kind="forbidden", times=1)
    with pytest.raises(ProviderAuthError) as caught:
        await lb.set_pool_enabled(pool.id, False)
    assert str(caught.value) == (
        f"the API token lacks Load Balancing: Monitors and Pools Edit on account "
        f"{world.cloudflare.account_id} (needed for disabling pool {pool.id})"
    )
    assert (await lb.pool(pool.id)).enabled  # nothing changed


async def test_events_refused_is_said_plainly(lb: CloudflareLoadBalancer, world: Sandbox) -> None:
    await fault(world, kind="events_forbidden")
    with pytest.raises(
        ProviderAuthError, match=r"lacks Analytics: Read .* reading the health events"
    ):
        await lb.health_events()
    assert len(await lb.pools()) == 3  # everything else carries on


async def test_wrong_token(world: Sandbox) -> None:
    cf = world.cloudflare
    adapter = CloudflareLoadBalancer("wrong", cf.account_id, cf.zone_id, base_url=cf.base_url)
    try:
        with pytest.raises(
            ProviderAuthError, match=r"rejected the API token .* check CLOUDFLARE_API_TOKEN"
        ):
            await adapter.pools()
    finally:
        await adapter.aclose()


async def test_slow_answers_time_out_with_a_chat_sized_wait(
    lb: CloudflareLoadBalancer, world: Sandbox
) -> None:
    await fault(world, kind="slow", delay=1.5)
    with pytest.raises(
        ProviderUnavailable,
        match=r"did not answer within 1 s while reading the pools; retried twice",
    ):
        await lb.pools()


async def test_unreachable() -> None:
    adapter = CloudflareLoadBalancer(
        "t", "a", "z", base_url="http://127.0.0.1:9/client/v4", timeout=0.5
    )
    try:
        with pytest.raises(
            ProviderUnavailable, match=r"cannot reach Cloudflare at http://127\.0\.0\.1:9"
        ):
            await adapter.pools()
    finally:
        await adapter.aclose()
