"""The fakes keep the rules the tests rely on: Cloudflare's pool health, failures and calls in
flight, the clock, and the channel's order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.errors import ProviderError, ProviderNotFound
from bot.fleet import Fleet
from bot.routing import routing_table

from .fakes import T0, Crash, FakeLoadBalancer, ListClock, RecordingNotifier, SlackDown

EU = "foundation-eu-west"


async def test_the_load_balancer_starts_as_planned_and_healthy(fleet: Fleet) -> None:
    lb = FakeLoadBalancer(fleet)
    view = await lb.live_view(fleet.load_balancer.hostname)
    assert {p.name: (p.enabled, p.healthy) for p in view.pools.values()} == {
        r.pool: (True, True) for r in fleet.regions.values()
    }
    routes = routing_table(view.load_balancer, view.pools)
    assert routes["WEU"].pool_id == EU and routes["WNAM"].pool_id == "foundation-us-east"
    assert lb.calls == [("live_view", fleet.load_balancer.hostname)]
    with pytest.raises(ProviderNotFound):
        await lb.live_view("elsewhere.example.com")


async def test_pool_health_follows_cloudflares_rules(fleet: Fleet) -> None:
    lb = FakeLoadBalancer(fleet)
    assert (await lb.set_pool_enabled(EU, False)).healthy is None  # disabled: not checked
    back = await lb.set_pool_enabled(EU, True)
    assert back.enabled and back.healthy is None  # unknown until the monitor checks it
    view = lb.edge()
    assert routing_table(view.load_balancer, view.pools)["WEU"].pool_id == "foundation-us-east"
    lb.set_health("eu-west", True)
    assert lb.pool_of("eu-west").healthy is True
    off = await lb.set_origin_enabled(EU, "gateway-eu-west", False)
    assert off.enabled and off.healthy is False  # fewer enabled origins than minimum_origins
    assert (await lb.set_origin_enabled(EU, "gateway-eu-west", True)).healthy is None
    lb.enabled_health = True  # a test may have the monitor check at once
    assert (await lb.set_origin_enabled(EU, "gateway-eu-west", False)).healthy is False
    assert (await lb.set_origin_enabled(EU, "gateway-eu-west", True)).healthy is True
    assert lb.changes[0] == ("set_pool_enabled", EU, "False")


async def test_failures_and_calls_in_flight(fleet: Fleet) -> None:
    lb = FakeLoadBalancer(fleet)
    seen: list[bool] = []

    async def look() -> None:
        seen.append(lb.enabled("eu-west"))

    lb.fail_next("set_pool_enabled", times=2)
    lb.during_next("set_pool_enabled", look)
    for _ in range(2):
        with pytest.raises(ProviderError, match="HTTP 500"):
            await lb.set_pool_enabled(EU, False)
    assert lb.enabled("eu-west") and seen == [True]  # it ran once, before the call landed
    await lb.set_pool_enabled(EU, False)
    assert not lb.enabled("eu-west") and len(lb.changes) == 3


async def test_health_changes_are_recorded_as_cloudflares_events(fleet: Fleet) -> None:
    clock = ListClock()
    lb = FakeLoadBalancer(fleet, clock)
    clock.advance(30)
    lb.set_health("apac-sg", False)
    [event] = await lb.health_events(since=T0)
    assert (event.pool_name, event.pool_healthy, event.at) == ("foundation-apac-sg", False, clock())
    assert await lb.health_events(since=clock() + timedelta(seconds=1)) == []


def test_the_clock_moves_only_when_told() -> None:
    clock = ListClock()
    assert clock() == clock() == T0
    assert clock.advance(1.5) == T0 + timedelta(seconds=1.5) and clock.since() == 1.5
    with pytest.raises(ValueError):
        ListClock(T0.replace(tzinfo=None))


async def test_the_channel_keeps_order_failures_and_crashes() -> None:
    channel = RecordingNotifier()
    first = await channel.post_operation_note("C1", "1.0", "one")
    channel.fail_next("post_operation_note")
    with pytest.raises(SlackDown):
        await channel.post_operation_note("C1", "1.0", "lost")
    channel.crash_after_next("post_operation_note")
    with pytest.raises(Crash):
        await channel.post_operation_note("C1", "1.0", "two")
    assert channel.texts("post_operation_note") == ["one", "two"]  # the crash came after Slack
    second = channel.posts[-1].ts
    assert first < second and channel.notes() == ["one", "two"]
